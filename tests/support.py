"""Starting the real service (gunicorn) on a free loopback port, for black-box tests."""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.abc
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "model"
"""The bundled model directory (``lin_reg.bin`` + ``metadata.json``)."""
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
STARTUP_BOUND = 120.0
"""Seconds a started server may take to answer: a liveness bound. ~2-4 s on a quiet box, but the suite
runs on xdist workers on a shared 2-core machine where imports alone have taken over 30 s."""


IMAGE_ONLY = ROOT / "tests" / "image_only"
BASE_IMAGE_PACKAGES = frozenset({"pip", "setuptools", "wheel"})
"""In ``python:3.11-slim`` already (the image keeps them out of the service's venv, but they are harmless)."""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


SERVICE_IMAGE = ("default",)
"""Pipfile.lock sections an image installs: the service's is the runtime section; the stream
consumer's adds ``stream`` (confluent-kafka)."""
STREAM_IMAGE = ("default", "stream")


@functools.cache
def image_packages(sections: tuple[str, ...] = SERVICE_IMAGE) -> frozenset[str]:
    """The distributions an image installs: those of Pipfile.lock's ``sections`` (normalized names)."""
    lock = json.loads((ROOT / "Pipfile.lock").read_text())
    return frozenset(_normalized(n) for section in sections for n in lock[section]) | BASE_IMAGE_PACKAGES


@functools.cache
def image_site(sections: tuple[str, ...] = SERVICE_IMAGE) -> Path:
    """A site-packages with only :func:`image_packages` in it: symlinks into this venv's, built once per
    process and image in a temporary directory (removed at exit).

    Ownership comes from each distribution's RECORD, read as text. An entry that only image packages
    own is linked whole; a directory shared with other packages (``google``: google-auth beside
    google-cloud-storage; ``mlflow``: mlflow-skinny beside full mlflow) is made here and its
    entries are placed the same way, down to three levels."""
    site = Path(sysconfig.get_paths()["purelib"])
    image: set[tuple[str, ...]] = set()
    other: set[tuple[str, ...]] = set()
    for dist in importlib.metadata.distributions(path=[str(site)]):
        owned = image if _normalized(dist.metadata["Name"] or "") in image_packages(sections) else other
        for line in (dist.read_text("RECORD") or "").splitlines():
            parts = tuple(line.rsplit(",", 2)[0].split("/"))
            if parts and parts[0] != "..":
                owned.update(parts[:depth] for depth in range(1, min(len(parts), 3) + 1))
    root = Path(tempfile.mkdtemp(prefix="image-site-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)

    def place(entry: tuple[str, ...]) -> None:
        source, target = site.joinpath(*entry), root.joinpath(*entry)
        if entry in other and len(entry) < 3 and source.is_dir() and not source.is_symlink():
            target.mkdir()
            for child in source.iterdir():
                if (*entry, child.name) in image:
                    place((*entry, child.name))
        else:
            target.symlink_to(source)

    for entry in sorted(e for e in image if len(e) == 1):
        place(entry)
    return root


def image_only_env(env: t.Mapping[str, str], sections: tuple[str, ...] = SERVICE_IMAGE) -> dict[str, str]:
    """``env`` for a Python process that sees only the packages of the image made of Pipfile.lock's
    ``sections`` (tests/image_only)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, (str(IMAGE_ONLY), env.get("PYTHONPATH")))),
            "RIDE_DURATION_IMAGE_SITE": str(image_site(sections))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns status, headers, body (errors are answers too)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def post_json(url: str, payload: t.Any, timeout: float = 10.0) -> tuple[int, dict[str, str], t.Any]:
    status, headers, body = http("POST", url, json.dumps(payload), {"Content-Type": "application/json"}, timeout)
    return status, headers, json.loads(body)


class Server:
    """A gunicorn process serving ``predict:app`` with this repo's gunicorn.conf.py."""

    def __init__(self, env: dict[str, str] | None = None, workers: int = 2, args: t.Sequence[str] = (),
                 log_path: Path | None = None, image_only: bool = True) -> None:
        """``image_only``: the service can import only what the image has (:func:`image_only_env`), so a
        serving path that needs a development package fails here as in the image; it also starts
        cheaper, as in the image (scikit-learn no longer imports pandas and pyarrow: 3.7 against
        4.4 CPU s per 2-worker start, measured). False gives it this whole environment (a case about
        an optional package, e.g. boto3)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1",
                    "WEB_CONCURRENCY": str(workers), **(env or {})}
        if image_only:
            self.env = image_only_env(self.env)
        self.args = list(args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: t.IO[bytes] | None = None

    def start(self, wait_for: str = "/health", timeout: float = STARTUP_BOUND) -> Server:
        out: t.Any = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
            out = self._log
        self.proc = subprocess.Popen([GUNICORN, *self.args], cwd=ROOT, env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT)
        try:
            self.wait(wait_for, timeout)
        except BaseException:  # not up in time (or interrupted): no gunicorn is left behind
            self.stop()
            raise
        return self

    def wait(self, path: str = "/health", timeout: float = 30.0, status: int = 200) -> float:
        """Poll ``path`` until it answers ``status``; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; log: {self.log_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if http("GET", self.url + path, timeout=2)[0] == status:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"{path} did not answer {status} within {timeout}s; log: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """The master's child processes (its workers), from /proc."""
        pids: set[int] = set()
        if self.proc is not None:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                    pids |= {int(p) for p in (task / "children").read_text().split()}
        return pids

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None:
                try:
                    self.proc.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        self.proc.kill()
                        self.proc.wait()
                        break
                    # A worker forked just before the SIGTERM may have taken it with the master's
                    # inherited handler (gunicorn installs the worker's own only in init_process):
                    # it serves on and the master waits its whole graceful_timeout (30 s) for it.
                    # Each second, the workers still there get the SIGTERM again (a no-op for one
                    # already draining).
                    for pid in self.worker_pids():
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGTERM)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(tmp_path_factory: t.Any, env: dict[str, str], workers: int = 2,
            ready: str = "/ready") -> t.Iterator[Server]:
    """A test module's gunicorn: its log in a fresh temp dir, ready before use, stopped after."""
    srv = Server(env=env, workers=workers, log_path=tmp_path_factory.mktemp("gunicorn") / "server.log")
    srv.start(ready)
    try:
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def untraced() -> t.Iterator[None]:
    """Coverage's tracer paused for a block of test scaffolding: fitting and registering models, writing
    data, computing expected values. Under ``make test`` (pytest-cov) the tracer slows *all* Python code
    in this process, library code included: on Python 3.11 it doubled the pytest workers' own CPU
    (331 s against 164 s for the suite, measured), most of it in scikit-learn, skops and MLflow work that
    only prepares a test. Product code that runs in here is not credited to the report; the lines must be
    covered by another test (``make test`` prints the total, and the ``fail_under`` floor holds it).

    Every started ``Coverage`` is stopped, not only the current one: in an xdist worker pytest-cov 7.1
    runs two (the controller's, started at plugin load, under the worker's), and stopping the top one
    resumes the other, which is why pytest-cov's own ``no_cover`` marker changes nothing under
    ``make test`` (measured: same CPU). Tests use the ``untraced`` marker (conftest.py) instead."""
    import coverage

    stopped = []
    while (cov := coverage.Coverage.current()) is not None:
        cov.stop()
        stopped.append(cov)
    try:
        yield
    finally:
        for cov in reversed(stopped):  # bottom first: the same stack as before
            cov.start()


class UntracedLibraryImports(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder: a module of the standard library or of an installed package is
    executed with this thread's coverage tracer set aside; the project's own modules are traced as before.

    Coverage measures the project only, yet on Python 3.11 its tracer slows every line this process
    runs, and importing a large library is a lot of lines: collection imports scikit-learn, MLflow and
    schemathesis in every xdist worker, and the first ``monitor`` test, which imports evidently, cost
    9.3 CPU s traced, 4.2 with this finder and 0.4 without coverage. Installed first on
    ``sys.meta_path`` (conftest.py), it asks the finders after it, as the import system would, and
    wraps the loader of a library module it found.

    Unlike :func:`untraced` it does not stop the ``Coverage``: it takes the tracer off this thread
    (``sys.settrace(None)``) and puts the same one back, which carries on tracing the frame that
    imported (coverage's tracer is made for ``sys.settrace(sys.gettrace())``). Stopping and starting
    coverage there would lose the rest of that frame (measured: 279 statements, 4 points of the total)
    and the tracers of other threads."""

    LIBRARIES = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")})

    def __init__(self) -> None:
        self._finding = threading.local()

    def find_spec(self, fullname: str, path: t.Any = None, target: t.Any = None) -> t.Any:
        if _coverage_tracer() is None or getattr(self._finding, "on", False):
            return None
        self._finding.on = True
        try:
            for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:
                find_spec = getattr(finder, "find_spec", None)
                spec = find_spec(fullname, path, target) if find_spec else None
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._finding.on = False
        if (hasattr(spec.loader, "exec_module") and isinstance(spec.origin, str)
                and spec.origin.startswith(self.LIBRARIES)):
            spec.loader = _UntracedLoader(spec.loader)
        return spec


def _coverage_tracer() -> t.Any:
    """This thread's trace function if it is coverage's, else None (a debugger's is left alone)."""
    tracer = sys.gettrace()
    return tracer if tracer is not None and type(tracer).__module__.startswith("coverage") else None


class _UntracedLoader(importlib.abc.Loader):
    """Runs the module with this thread's coverage tracer set aside; the module keeps its real loader."""

    def __init__(self, loader: t.Any) -> None:
        self.loader = loader

    def create_module(self, spec: t.Any) -> t.Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: t.Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        tracer = _coverage_tracer()
        if tracer is None:  # set aside already (a nested import), or not coverage's to touch
            self.loader.exec_module(module)
            return
        sys.settrace(None)
        try:
            self.loader.exec_module(module)
        finally:
            sys.settrace(tracer)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.loader, name)


def untraced_thread(target: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """``target`` for a ``threading.Thread`` that generates load (HTTP clients): it runs without
    coverage's tracer, which the thread would otherwise inherit (see :func:`untraced`)."""
    def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
        sys.settrace(None)
        return target(*args, **kwargs)
    return run


def stop_group(leader: subprocess.Popen[t.Any] | int, timeout: float = 20.0) -> None:
    """Stop a process group started with ``start_new_session=True`` (its id is the leader's PID):
    SIGTERM to the group, up to ``timeout`` s for the leader to exit, then SIGKILL to whatever is left
    of the group (a worker that outlived its parent). ``leader`` is our child (reaped here) or, for a
    server another process started, its PID."""
    pgid = leader if isinstance(leader, int) else leader.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if isinstance(leader, int):
        with contextlib.suppress(AssertionError):  # not gone in time: killed below
            wait_until(lambda: not alive(pgid), timeout, f"process group {pgid} to exit")
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):  # not gone in time: killed below
            leader.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if not isinstance(leader, int):
        leader.wait()


def alive(pid: int) -> bool:
    """Running, not a zombie (a parent that has not reaped it yet leaves one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: t.Callable[[], t.Any], timeout: float, what: str, interval: float = 0.1) -> t.Any:
    """Poll ``predicate`` until it returns something truthy (returned); a liveness bound, not a timing claim.

    :raises AssertionError: not within ``timeout`` seconds (names ``what`` and the last value).
    """
    deadline = time.monotonic() + timeout
    last: t.Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
