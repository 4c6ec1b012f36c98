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
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import threading
import time
import typing as t
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import sklearn

from .holder import load_bundled
from .mlflow_model import SHA256_TAG, bound_http, example_rides, split_pipeline
from .predictor import LoadedModel, ModelCheckError

if t.TYPE_CHECKING:
    from flask import Flask
    from mlflow import MlflowClient

    from .config import Settings
    from .holder import ModelHolder

log = logging.getLogger(__name__)

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))?/?$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+?)/?$")


class RegistryUnavailable(Exception):
    """The registry could not be asked, or the URI points at nothing yet; try again later."""


class CandidateRejected(Exception):
    """The model the URI points at is not fit to serve; don't try this one again."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What a model URI points at right now."""

    uri: str
    artifact_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the artifact: a registered version, else its location."""
        return f"{self.name}/{self.version}" if self.version else self.artifact_uri

    @property
    def label(self) -> str:
        """The ``model_version`` responses carry."""
        if self.version:
            return f"{self.name}-v{self.version}"
        return f"run-{(self.run_id or 'unknown')[:12]}"


def short(exc: BaseException, limit: int = 300) -> str:
    """One line of an exception, for ``/ready`` and logs (MLflow's messages run long)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def resolve(client: MlflowClient, uri: str) -> Target:
    """Ask the registry what ``uri`` points at. :raises RegistryUnavailable: cannot tell (now)."""
    from mlflow.exceptions import MlflowException

    runs = RUNS_URI.match(uri)
    if runs:
        return Target(uri, uri, run_id=runs["run_id"])
    match = MODELS_URI.match(uri)
    if not match:
        raise RegistryUnavailable(f"unsupported MODEL_URI {uri!r}")
    name, alias, ref = match["name"], match["alias"], match["ref"]
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif ref is None and name.startswith("m-"):
            return Target(uri, uri)  # a logged model id: fixed artifacts, no registry entry
        elif ref is not None and ref.isdigit():
            mv = client.get_model_version(name, ref)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated since MLflow 2.9
                stages = None if ref in (None, "latest") else [ref]
                found = client.get_latest_versions(name, stages)
            if not found:
                raise RegistryUnavailable(f"model {name!r} has no version in stage {ref or 'latest'}")
            mv = max(found, key=lambda v: int(v.version))
        artifact_uri = client.get_model_version_download_uri(mv.name, mv.version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            what = f"alias @{alias}" if alias else f"version {ref}"
            raise RegistryUnavailable(f"{what} of model {name!r} not found in the registry") from exc
        raise RegistryUnavailable(f"registry request failed: {short(exc)}") from exc
    return Target(uri, artifact_uri, name=mv.name, version=str(mv.version), alias=alias,
                  stage=None if alias or (ref or "").isdigit() else (ref or "latest"),
                  run_id=mv.run_id or None, tags=dict(mv.tags or {}))


def download(artifact_uri: str, dst: str) -> Path:
    """One artifact file. :raises RegistryUnavailable: on any transport or lookup error."""
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types for "could not fetch"
        raise RegistryUnavailable(f"cannot download {artifact_uri.rsplit('/', 1)[-1]}: {short(exc)}") from exc


def run_metrics(client: MlflowClient, run_id: str | None, warnings_out: list[str]) -> dict[str, float] | None:
    if not run_id:
        return None
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception as exc:  # noqa: BLE001 - metrics are informative; the model still serves
        warnings_out.append(f"run metrics unavailable: {short(exc, 120)}")
        return None


def load(client: MlflowClient, target: Target) -> LoadedModel:
    """Download, verify, unpickle and check the model at ``target``.

    :raises RegistryUnavailable: the artifacts could not be fetched (transient).
    :raises CandidateRejected: the artifacts are not a servable model (permanent).
    """
    import yaml

    notes: list[str] = []
    base = target.artifact_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="ride-duration-model-") as tmp:
        mlmodel = yaml.safe_load(download(f"{base}/MLmodel", tmp).read_text()) or {}
        flavor = (mlmodel.get("flavors") or {}).get("sklearn")
        if not flavor:
            raise CandidateRejected("not an sklearn-flavour MLflow model")
        if flavor.get("serialization_format", "cloudpickle") not in ("cloudpickle", "pickle"):
            raise CandidateRejected(f"serialization format {flavor.get('serialization_format')!r} is not "
                                    "supported by the service; log with serialization_format='cloudpickle'")
        blob = download(f"{base}/{flavor.get('pickled_model', 'model.pkl')}", tmp).read_bytes()
        example_info = mlmodel.get("saved_input_example_info") or {}
        example = None
        if example_info.get("artifact_path"):
            example = json.loads(download(f"{base}/{example_info['artifact_path']}", tmp).read_text())
    digest = hashlib.sha256(blob).hexdigest()
    expected = target.tags.get(SHA256_TAG)
    if expected and expected.lower() != digest:
        raise CandidateRejected(f"sha256 mismatch: tag {SHA256_TAG} says {expected[:12]}…, artifact has "
                                f"{digest[:12]}…; refusing to unpickle")
    if not expected:
        notes.append(f"no {SHA256_TAG} tag on the model version: integrity not verified")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dv, regressor = split_pipeline(pickle.loads(blob))  # noqa: S301 - registry is trusted, digest checked
        except ModelCheckError as exc:
            raise CandidateRejected(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any unpickling failure disqualifies the model
            raise CandidateRejected(f"cannot unpickle model: {short(exc)}") from exc
    notes += sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    run_id = target.run_id or mlmodel.get("run_id")
    metadata = dict(mlmodel.get("metadata") or {})
    metrics = run_metrics(client, run_id, notes)
    if metrics is not None:
        metadata["metrics"] = metrics
    info = {
        "name": target.name or mlmodel.get("model_id"), "uri": target.uri, "alias": target.alias,
        "stage": target.stage, "registered_version": target.version, "run_id": run_id,
        "artifact_uri": target.artifact_uri, "sha256": digest, "sha256_verified": bool(expected),
        "metrics": metadata.get("metrics"), "metadata": metadata,
        "sklearn_version": sklearn.__version__, "trained_sklearn_version": flavor.get("sklearn_version"),
        "loaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "warnings": notes,
    }
    try:
        model = LoadedModel.build(dv, regressor, version=target.label, source="registry", info=info)
        if example is not None:
            check_example(model, example_rides(example))
    except ModelCheckError as exc:
        raise CandidateRejected(str(exc)) from exc
    return model


def check_example(model: LoadedModel, rides: list[dict[str, t.Any]]) -> None:
    """The logged input example must give one finite prediction per ride (both paths).

    :raises ModelCheckError: otherwise.
    """
    import math

    for out in (model.predict(rides), model.predict_general(rides).ravel().tolist()):
        if len(out) != len(rides) or not all(math.isfinite(v) for v in out):
            raise ModelCheckError("input example gave NaN, infinite or missing predictions")


class Handoff:
    """What the workers of one gunicorn master pass on to the workers it forks later.

    Files in a ``0700`` directory under the temp dir, named after the master's PID:
    ``current.pkl`` (key, target and the checked ``LoadedModel``) and ``rejected.json``.
    Written with an atomic rename; every failure only costs a log line.
    """

    def __init__(self, owner_pid: int) -> None:
        self.dir = Path(tempfile.gettempdir()) / f"ride-duration-registry-{owner_pid}"

    def _write(self, name: str, blob: bytes) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            tmp = self.dir / f".{name}.{os.getpid()}"
            tmp.write_bytes(blob)
            os.replace(tmp, self.dir / name)
        except OSError as exc:
            log.warning("model hand-off not written (%s): %s", self.dir, exc)

    def _read(self, name: str) -> bytes | None:
        path = self.dir / name
        try:
            if self.dir.stat().st_uid != os.getuid() or self.dir.stat().st_mode & 0o077:
                return None  # not ours alone: don't unpickle it
            return path.read_bytes()
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

    def load(self) -> tuple[tuple[str, Target, LoadedModel] | None, dict[str, str]]:
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
            import mlflow
            from mlflow import MlflowClient

            mlflow.set_tracking_uri(self.tracking_uri)  # mlflow-artifacts:/ downloads resolve against it
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
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
        current, rejected = self.handoff.load()
        self.rejected.update(rejected)
        if current is not None:
            key, target, model = current
            if key != self.serving_key and key not in self.rejected:
                self.install(target, model, event="model_swapped", via="handoff")

    def load_initial(self) -> str | None:
        """Load the start-up model within ``load_timeout``; return why not, or None on success."""
        deadline = time.monotonic() + self.load_timeout
        unreachable = probe(self.tracking_uri, self.load_timeout)
        if unreachable is not None:  # fail fast, before importing mlflow (~1-2 s)
            self.last_check, self.last_ok = time.time(), False
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
        self.last_check, self.last_ok = time.time(), "target" in box
        error = box.get("error")
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
