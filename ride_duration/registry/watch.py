"""Following a model URI in the MLflow registry: the start-up load and the live watcher.

``ride_duration.startup`` calls :meth:`Watcher.load_initial`, which resolves ``MODEL_URI``
(``models:/NAME@alias``, ``models:/NAME/Stage``, ``models:/NAME/3``, ``models:/NAME/latest``,
``runs:/RUN/model``) within ``MODEL_LOAD_TIMEOUT`` and says why when it cannot (startup then
serves the bundled model or stays not ready). Each gunicorn worker then runs a
:class:`Watcher` thread that re-resolves the URI every ``MODEL_POLL_SECONDS`` and, when
it points elsewhere, loads the new model off the request path, checks it
(``LoadedModel.build``'s golden self-test plus the logged input example) and swaps it in
atomically. A rejected version is remembered and not retried; a registry outage only
costs log lines. Replacement workers first restore what their siblings learned
(:mod:`.handoff`).

Only mlflow-skinny is used (client calls, artifact downloads). The logged pipeline is
unpickled here and served by ``LoadedModel`` exactly like the bundled file: same fast
path, same numbers for the same weights, no pandas or pyfunc per request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import typing as t
import urllib.error
import urllib.request

from . import safe_format
from .client import client_for
from .fetch import CandidateRejected, LoadPolicy, RegistryUnavailable, Target, build, fetch, load, resolve, short
from .handoff import Handoff

if t.TYPE_CHECKING:
    from mlflow import MlflowClient

    from ..config import Settings
    from ..model.holder import ModelHolder
    from ..model.predictor import LoadedModel

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
"""Seconds a tracking server may take to answer ``/health`` at start-up (healthy: milliseconds).
A registry that accepts connections but never answers then costs 2 s, not ``MODEL_LOAD_TIMEOUT``."""


class Watcher:
    """Follows ``MODEL_URI`` (or another ``uri``: the shadow model's) for one process and swaps new
    versions into the holder.

    ``role`` names what is followed: ``"served"`` or ``"shadow"``; each role has its own hand-off
    between the workers of one master, so the shadow never replaces the served model.
    """

    def __init__(self, settings: Settings, holder: ModelHolder, uri: str | None = None,
                 role: str = "served") -> None:
        self.tracking_uri = t.cast(str, settings.mlflow_tracking_uri)
        self.uri = uri or settings.resolved_model_uri
        self.role = role
        self.poll_seconds = settings.model_poll_seconds
        self.load_timeout = settings.model_load_timeout
        self.policy = LoadPolicy.from_settings(settings)
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
        self.handoff = Handoff(os.getpid(), "" if role == "served" else f"-{role}")

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

    def reject(self, target: Target, error: CandidateRejected) -> None:
        """Remember ``target`` as refused (never fetched again by this URI's watchers) and say so."""
        reason = str(error)
        self.rejected[target.key] = reason
        self.holder.refuse(target.version or target.key, reason, error.code, uri=self.uri)
        self.handoff.save_rejected(self.rejected)

    def restore(self) -> None:
        """Take over what sibling workers learned since the master loaded its model."""
        current, rejected = self.handoff.read()
        for key, reason in rejected.items():
            if key not in self.rejected:
                self.rejected[key] = reason
                shown = key.split("/", 1)[1] if key.count("/") == 1 else key  # "name/4" -> "4"
                self.holder.refused.setdefault(shown, {"version": shown, "reason": reason})
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
        safe_format.preload()  # and skops, before the fork: a worker importing it would stall its requests
        deadline = max(deadline, time.monotonic() + self.load_timeout)  # the timeout is the registry's, not imports'
        box: dict[str, t.Any] = {}

        def work() -> None:
            try:
                box["target"] = resolve(client, self.uri)
                box["fetched"] = fetch(client, box["target"], self.policy)
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
            self.reject(box["target"], error)
            return f"model {box['target'].label} rejected: {error}"
        if error is not None:
            return f"registry unavailable: {error}"
        try:  # deserializing and checking is CPU, not the registry: outside its deadline
            model = build(box["fetched"])
        except CandidateRejected as exc:
            self.reject(box["target"], exc)
            return f"model {box['target'].label} rejected: {exc}"
        self.install(box["target"], model, event="model_loaded")
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
            model = load(self.client, target, self.policy)
        except CandidateRejected as exc:
            self.reject(target, exc)
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
        self._thread = threading.Thread(target=self.run, name=f"registry-watcher-{self.role}", daemon=True)
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
