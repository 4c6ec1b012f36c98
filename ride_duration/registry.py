"""Serving from the MLflow registry: the start-up model, the fallback, and the live watcher.

``init_app`` resolves ``MODEL_URI`` (``models:/NAME@alias``, ``models:/NAME/Stage``,
``models:/NAME/3``, ``models:/NAME/latest``, ``runs:/RUN/model``) within
``MODEL_LOAD_TIMEOUT``; if the registry cannot be used it serves the bundled model
(``MODEL_FALLBACK=true``) or stays not ready. Each gunicorn worker then runs a
:class:`Watcher` thread that re-resolves the URI every ``MODEL_POLL_SECONDS`` and, when
it points elsewhere, loads the new model off the request path, checks it
(``LoadedModel.build``'s golden self-test plus the logged input example) and swaps it in
atomically. A rejected version is remembered and not retried; a registry outage only
costs log lines.

gunicorn forks replacement workers (``max_requests``, a crash) from the master, whose copy
of the model is the start-up one. So that a new worker does not answer with that stale
version while its siblings serve the current one, workers hand off through a private
directory (:class:`Handoff`): the last installed model (pickled ``LoadedModel``) and the
rejected versions. A new worker restores from it before serving, with no registry call.

Only mlflow-skinny is used (client calls, artifact downloads). The logged pipeline is
unpickled here and served by ``LoadedModel`` exactly like the bundled file: same fast
path, same numbers for the same weights, no pandas or pyfunc per request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

from .holder import load_bundled
from .mlflow_model import bound_http
from .registry_fetch import CandidateRejected, RegistryUnavailable, Target, client_for, load, resolve, short

if t.TYPE_CHECKING:
    from flask import Flask
    from mlflow import MlflowClient

    from .config import Settings
    from .holder import ModelHolder
    from .predictor import LoadedModel

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
"""Seconds a tracking server may take to answer ``/health`` at start-up (healthy: milliseconds).
A registry that accepts connections but never answers then costs 2 s, not ``MODEL_LOAD_TIMEOUT``."""


class Handoff:
    """What the workers of one gunicorn master pass on to the workers it forks later.

    Files in a ``0700`` directory under the temp dir, named after the master's PID:
    ``current.pkl`` (key, target and the checked ``LoadedModel``) and ``rejected.json``.
    Written with an atomic rename; every failure only costs a log line.
    """

    def __init__(self, owner_pid: int) -> None:
        self.dir = Path(tempfile.gettempdir()) / f"ride-duration-registry-{owner_pid}"

    def _private(self) -> bool:
        """The directory exists, is ours and nobody else's (we unpickle what is in it)."""
        info = self.dir.stat()
        return info.st_uid == os.getuid() and not info.st_mode & 0o077

    def _write(self, name: str, blob: bytes) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            if not self._private():
                raise PermissionError(f"{self.dir} is not private to this user")
            tmp = self.dir / f".{name}.{os.getpid()}"
            tmp.write_bytes(blob)
            os.replace(tmp, self.dir / name)
        except OSError as exc:
            log.warning("model hand-off not written (%s): %s", self.dir, exc)

    def _read(self, name: str) -> bytes | None:
        path = self.dir / name
        try:
            return path.read_bytes() if self._private() else None
        except OSError:
            return None

    def clear(self) -> None:
        """Forget a previous master's hand-off (a restarted container reuses PIDs)."""
        for name in ("current.pkl", "rejected.json"):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    def save_model(self, key: str, target: Target, model: LoadedModel) -> None:
        self._write("current.pkl", pickle.dumps((key, target, model), protocol=5))

    def save_rejected(self, rejected: dict[str, str]) -> None:
        self._write("rejected.json", json.dumps(rejected).encode())

    def read(self) -> tuple[tuple[str, Target, LoadedModel] | None, dict[str, str]]:
        current = rejected = None
        with contextlib.suppress(Exception):  # unreadable hand-off: start from the master's model
            blob = self._read("current.pkl")
            current = pickle.loads(blob) if blob else None  # noqa: S301 - written by our own workers, 0700
        with contextlib.suppress(Exception):
            blob = self._read("rejected.json")
            rejected = json.loads(blob) if blob else None
        return current, dict(rejected or {})


class Watcher:
    """Follows ``MODEL_URI`` for one process and swaps new versions into the holder."""

    def __init__(self, settings: Settings, holder: ModelHolder) -> None:
        self.tracking_uri = t.cast(str, settings.mlflow_tracking_uri)
        self.uri = settings.resolved_model_uri
        self.poll_seconds = settings.model_poll_seconds
        self.load_timeout = settings.model_load_timeout
        self.holder = holder
        self._client: MlflowClient | None = None
        self.serving_key: str | None = None
        """Key of the registry model in the holder (None: bundled or nothing)."""
        self.rejected: dict[str, str] = {}
        self.last_check: float | None = None
        self.last_ok: bool | None = None
        self._stop = threading.Event()
        self._check_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.handoff = Handoff(os.getpid())

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created (and mlflow imported) on first use."""
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def is_new(self, target: Target) -> bool:
        return target.key != self.serving_key and target.key not in self.rejected

    def install(self, target: Target, model: LoadedModel, event: str, **fields: t.Any) -> None:
        self.serving_key = target.key
        self.holder.swap(model, event=event, uri=self.uri, registered_version=target.version, alias=target.alias,
                         **fields)
        if event == "model_swapped" and fields.get("via") != "handoff":
            self.handoff.save_model(target.key, target, model)

    def reject(self, target: Target, reason: str) -> None:
        self.rejected[target.key] = reason
        self.holder.emit("model_rejected", version=target.version or target.key, reason=reason, uri=self.uri)
        self.handoff.save_rejected(self.rejected)

    def restore(self) -> None:
        """Take over what sibling workers learned since the master loaded its model."""
        current, rejected = self.handoff.read()
        self.rejected.update(rejected)
        if current is not None:
            key, target, model = current
            if key != self.serving_key and key not in self.rejected:
                self.install(target, model, event="model_swapped", via="handoff")

    def load_initial(self) -> str | None:
        """Load the start-up model within ``load_timeout``; return why not, or None on success."""
        deadline = time.monotonic() + self.load_timeout
        unreachable = probe(self.tracking_uri, min(PROBE_TIMEOUT, self.load_timeout))
        if unreachable is not None:  # fail fast, before importing mlflow (~1-2 s)
            self.checked(False, unreachable)
            return f"registry unavailable: {unreachable}"
        client = self.client  # import mlflow here, not in the thread below: it may outlive the deadline
        box: dict[str, t.Any] = {}

        def work() -> None:
            try:
                box["target"] = resolve(client, self.uri)
                box["model"] = load(client, box["target"])
            except (RegistryUnavailable, CandidateRejected) as exc:
                box["error"] = exc
            except Exception as exc:  # noqa: BLE001 - reported as the fallback reason
                box["error"] = RegistryUnavailable(short(exc))

        thread = threading.Thread(target=work, name="registry-startup", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # left to finish on its own: HTTP timeouts are bounded (bound_http)
            return f"registry did not answer within {self.load_timeout:g}s for {self.uri}"
        error = box.get("error")
        self.checked("target" in box, None if "target" in box else str(error))
        if isinstance(error, CandidateRejected):
            self.reject(box["target"], str(error))
            return f"model {box['target'].label} rejected: {error}"
        if error is not None:
            return f"registry unavailable: {error}"
        self.install(box["target"], box["model"], event="model_loaded")
        return None

    def check(self) -> None:
        """One poll: resolve, and load + swap if the URI now points at something new."""
        with self._check_lock:
            self._check()

    def _check(self) -> None:
        try:
            target = resolve(self.client, self.uri)
        except RegistryUnavailable as exc:
            self.note_check(False, str(exc))
            return
        self.note_check(True, version=target.version)
        if not self.is_new(target):
            return
        try:
            model = load(self.client, target)
        except CandidateRejected as exc:
            self.reject(target, str(exc))
            return
        except RegistryUnavailable as exc:
            log.warning("could not load %s, will retry next poll: %s", target.label, exc)
            return
        self.install(target, model, event="model_swapped")

    def note_check(self, ok: bool, reason: str | None = None, version: str | None = None) -> None:
        if ok and self.last_ok is False:
            log.info("registry reachable again for %s", self.uri)
        elif not ok and self.last_ok is not False:
            log.warning("registry check failed, still serving %s: %s",
                        getattr(self.holder.current, "version", None), reason)
        self.checked(ok, reason, version)

    def checked(self, ok: bool, reason: str | None = None, version: str | None = None) -> None:
        """Record a registry check (``holder.events["registry_checked"]["at"]`` feeds /metrics)."""
        self.last_check, self.last_ok = time.time(), ok
        self.holder.emit("registry_checked", ok=ok, version=version, reason=reason)

    def run(self) -> None:
        stale = self.last_check is None or time.time() - self.last_check > self.poll_seconds
        wait = 0.0 if stale else self.poll_seconds  # a re-forked worker checks at once
        while not self._stop.wait(wait):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("registry watcher: unexpected error; will retry")
            wait = self.poll_seconds

    def start(self) -> None:
        """Start this process's watcher thread (idempotent; call again after a fork).

        First takes over the model and rejections sibling workers left in the hand-off
        (local files, no registry call), so a worker gunicorn forks long after start-up
        does not answer with the master's stale start-up model.
        """
        if self.poll_seconds <= 0 or (self._pid == os.getpid() and self._thread and self._thread.is_alive()):
            return
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._check_lock = threading.Lock()  # a fork copies locks in whatever state they were in
        self.restore()
        self._thread = threading.Thread(target=self.run, name="registry-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def probe(tracking_uri: str, timeout: float) -> str | None:
    """Why an HTTP tracking server cannot be reached, or None (any HTTP answer counts as reachable)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout).close()  # noqa: S310
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        return f"cannot reach {tracking_uri}: {getattr(exc, 'reason', None) or exc}"
    return None


def init_app(app: Flask, settings: Settings, holder: ModelHolder) -> Watcher:
    """Load the start-up model from the registry (or fall back) and arrange per-worker watchers."""
    bound_http(timeout=settings.model_load_timeout, max_retries=0)
    watcher = Watcher(settings, holder)
    watcher.handoff.clear()
    app.extensions["registry"] = watcher
    reason = watcher.load_initial()
    if reason is not None:
        if settings.model_fallback:
            load_bundled(settings, holder, note=reason)
        else:
            holder.fail(f"{reason} (MODEL_FALLBACK=false)")
    app.extensions.setdefault("post_fork", []).append(watcher.start)
    return watcher
