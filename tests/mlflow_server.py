"""A real ``mlflow server`` on a free loopback port, for registry tests.

sqlite backend and a local artifact root under a temporary directory, one worker,
no job consumers (~480 MB RSS instead of ~3 GB). ``stop()``/``start()`` may be
called mid-test: the port and the stored data survive a restart.

    with MlflowServer(tmp_path) as registry:
        env = {"MLFLOW_TRACKING_URI": registry.url}

Object stores (tests/registry/test_artifact_stores.py): ``artifacts="s3://bucket/prefix"`` (or
``gs://``) with the store's endpoint and credentials in ``env``; ``serve_artifacts=False`` makes
it hand out the store's URIs to clients instead of proxying (``--no-serve-artifacts
--default-artifact-root``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import STARTUP_BOUND, free_port, http

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
        """Start the server and wait until ``/health`` answers 200."""
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
        if proc is None or proc.poll() is not None:
            return
        pgid = proc.pid  # start_new_session: the group id is the server's own PID
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(pgid, signal.SIGKILL)

    def restart(self) -> MlflowServer:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
