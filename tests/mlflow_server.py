"""A real ``mlflow server`` on a free loopback port, for registry tests.

sqlite backend and a local artifact root under a temporary directory, one worker,
no job consumers (~480 MB RSS instead of ~3 GB). ``stop()``/``start()`` may be
called mid-test: the port and the stored data survive a restart.

    with MlflowServer(tmp_path) as registry:
        env = {"MLFLOW_TRACKING_URI": registry.url}

One run, one shared server: :func:`shared` starts it for the first xdist worker that needs it and
attaches the others (a file lock in a directory the controller hands each worker); the controller
stops it with :func:`stop_shared` once every worker is done. Each start costs ~11 CPU s (the CLI
and its uvicorn worker each import MLflow), and registry tests use their own model names.

Object stores (tests/registry/test_artifact_stores.py): ``artifacts="s3://bucket/prefix"`` (or
``gs://``) with the store's endpoint and credentials in ``env``; ``serve_artifacts=False`` makes
it hand out the store's URIs to clients instead of proxying (``--no-serve-artifacts
--default-artifact-root``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support import STARTUP_BOUND, alive, free_port, http, stop_group

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


class MlflowServer:
    """``mlflow server`` as a child process, stopped by PID (its process group)."""

    def __init__(self, root: Path, port: int | None = None, artifacts: str | None = None,
                 serve_artifacts: bool = True, env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.artifacts = artifacts or str(self.root / "artifacts")
        self.serve_artifacts = serve_artifacts
        self.env = dict(env or {})
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.root / "mlflow-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                *(["--artifacts-destination", self.artifacts] if self.serve_artifacts else
                  ["--no-serve-artifacts", "--default-artifact-root", self.artifacts])]

    def start(self, timeout: float = 2 * STARTUP_BOUND) -> MlflowServer:
        """Start the server and wait until ``/health`` answers 200.

        :raises RuntimeError: it is running already (a second process would orphan the first)."""
        if self.running:
            raise RuntimeError(f"mlflow server already running (PID {self.proc.pid})")  # type: ignore[union-attr]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log_path, "ab") as log:
            # own process group: stop() reaches the uvicorn worker too, and nothing else
            self.proc = subprocess.Popen(self.command(), cwd=self.root, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if http("GET", self.url + "/health", timeout=2)[0] == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy within {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and its workers (SIGTERM to its process group, SIGKILL if slow)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            stop_group(proc, timeout)

    def restart(self) -> MlflowServer:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def __enter__(self) -> MlflowServer:
        """``with MlflowServer(...) as s`` starts it; ``with MlflowServer(...).start() as s`` does not again."""
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Unpluggable:
    """A TCP relay on its own loopback port in front of a running server: a registry that can be
    taken off the network and put back without stopping it.

    ``unplug()`` closes the port and every relayed connection, so clients see what a stopped
    server gives them (refused connections, reset keep-alive sockets); ``plug()`` listens on the
    same port again. The server behind keeps its process and data, which spares an outage test
    the two slowest steps it would otherwise take (``mlflow server`` start-ups, ~13 CPU s each).

        with Unpluggable(mlflow_server.port) as link:
            env = {"MLFLOW_TRACKING_URI": link.url}; ...; link.unplug(); ...; link.plug()
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def plugged(self) -> bool:
        return self._listener is not None

    def plug(self) -> Unpluggable:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), name="relay-accept", daemon=True)
        self._acceptor.start()
        return self

    def unplug(self) -> None:
        """Close the port and drop every relayed connection (the threads using a socket close it)."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        assert self._acceptor is not None
        self._acceptor.join(10)  # no new connections now, and the port is free again
        with self._lock:
            conns, self._open = self._open, set()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the recv() blocked on it

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:  # unplugged
                    return
                try:
                    upstream = socket.create_connection(self.target, timeout=10)
                    upstream.settimeout(None)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._open.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), name="relay-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        # one side ended: end the pair (HTTP clients do not half-close); the other pump then stops
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._open.discard(src)
        src.close()

    def __enter__(self) -> Unpluggable:
        return self.plug()

    def __exit__(self, *exc: object) -> None:
        self.unplug()


SHARED_DIR_KEY = "ride_duration/mlflow_shared_dir"
"""The ``workerinput`` key under which the xdist controller (conftest.py) hands every worker the
directory of :func:`shared`."""


def shared(directory: Path) -> MlflowServer:
    """The run's shared server, whose files live in ``directory``: started here if no live one is
    recorded there (under an exclusive lock, so concurrent workers start one between them), else
    attached to. Never stopped by a worker: :func:`stop_shared` does that, in the xdist controller."""
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "server.json"
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if state.exists():
            recorded = json.loads(state.read_text())
            server = MlflowServer(directory / "server", port=recorded["port"])
            if alive(recorded["pid"]):
                return server
        server = MlflowServer(directory / "server").start()
        assert server.proc is not None
        state.write_text(json.dumps({"pid": server.proc.pid, "port": server.port}))
        return server


def stop_shared(directory: Path, timeout: float = 20.0) -> None:
    """Stop the shared server recorded in ``directory`` (its process group: the CLI and its uvicorn
    worker), SIGKILL if it is slow; nothing if none was started."""
    state = directory / "server.json"
    if not state.exists():
        return
    stop_group(json.loads(state.read_text())["pid"], timeout)  # started in its own session
    state.unlink()

