"""Where a process's model comes from: the one place that chooses the registry or the bundled file.

Read top-down: :func:`init_app` (the service) and :func:`load_model` (batch and streaming jobs)
decide on ``MLFLOW_TRACKING_URI``/``--model-uri``; the registry layer
(:mod:`ride_duration.registry`) and the model layer (:mod:`ride_duration.model`) below never
call back up here.
"""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

from .model.holder import ModelHolder, load_bundled
from .model.loading import ModelLoadError

if t.TYPE_CHECKING:
    from flask import Flask

    from .config import Settings
    from .model.predictor import LoadedModel
    from .registry.watch import Watcher

log = logging.getLogger(__name__)


def init_app(app: Flask, settings: Settings) -> ModelHolder:
    """Choose and load the start-up model; the holder lives at ``app.extensions["model"]``."""
    holder = ModelHolder()
    app.extensions["model"] = holder
    if settings.mlflow_tracking_uri:
        watcher = start_registry(settings, holder)
        app.extensions["registry"] = watcher
        app.extensions.setdefault("post_fork", []).append(watcher.start)
    else:
        load_bundled(settings, holder)
    return holder


def get_holder(app: Flask) -> ModelHolder:
    return t.cast(ModelHolder, app.extensions["model"])


def start_registry(settings: Settings, holder: ModelHolder) -> Watcher:
    """Load the start-up model from the registry into ``holder``, or fall back to the bundled file.

    Returns the :class:`~ride_duration.registry.watch.Watcher`; call its ``start()`` in each
    process that serves (after a fork: threads do not survive it).
    """
    from .registry.client import bound_http
    from .registry.watch import Watcher

    bound_http(timeout=settings.model_load_timeout, max_retries=0)
    watcher = Watcher(settings, holder)
    watcher.handoff.clear()
    reason = watcher.load_initial()
    if reason is not None:
        if settings.model_fallback:
            load_bundled(settings, holder, note=reason)
        else:
            holder.fail(f"{reason} (MODEL_FALLBACK=false)")
    return watcher


def follow_model(settings: Settings, holder: ModelHolder, background: bool = True) -> Watcher | None:
    """Long-running jobs (stream consumer, Lambda handler): load as the service does, follow the alias.

    With ``MLFLOW_TRACKING_URI``: the registry model (or the bundled fallback) and a watcher
    that hot-swaps new versions into ``holder``, started as a thread when ``background`` (a
    Lambda, frozen between invocations, calls ``watcher.check()`` itself); else the bundled
    file. Check ``holder.current`` afterwards: None means no model could be loaded
    (``holder.reason``).
    """
    if settings.mlflow_tracking_uri:
        watcher = start_registry(settings, holder)
        if background:
            watcher.start()
        return watcher
    load_bundled(settings, holder)
    return None


def follow_shadow(settings: Settings, background: bool = True) -> tuple[ModelHolder, Watcher | None] | None:
    """The shadow model (``SHADOW_MODEL_URI``), followed exactly like the served one: the same watcher,
    checks and refusals, in a holder of its own. None when no shadow is configured.

    There is no fallback: a shadow that cannot be loaded leaves the holder empty with the reason
    (``/ready`` shows it) and the watcher keeps trying. ``background``: start the watcher thread now
    (the service starts it in each worker after the fork instead).
    """
    if not settings.shadow_model_uri:
        return None
    holder = ModelHolder(role="shadow")
    if not settings.mlflow_tracking_uri:
        holder.fail(f"SHADOW_MODEL_URI {settings.shadow_model_uri} needs MLFLOW_TRACKING_URI")
        return holder, None
    from .registry.client import bound_http
    from .registry.watch import Watcher

    bound_http(timeout=settings.model_load_timeout, max_retries=0)
    watcher = Watcher(settings, holder, uri=settings.shadow_model_uri, role="shadow")
    watcher.handoff.clear()
    reason = watcher.load_initial()
    if reason is not None:
        holder.fail(reason)
    if background:
        watcher.start()
    return holder, watcher


def load_model(settings: Settings, model_path: Path | None = None, model_uri: str | None = None) -> LoadedModel:
    """The service's choice: ``--model-uri`` or ``MLFLOW_TRACKING_URI`` → registry, else the bundled file.

    :raises ModelLoadError: the model cannot be loaded (no fallback: a batch run should fail loudly).
    """
    if model_uri or (model_path is None and settings.mlflow_tracking_uri):
        return load_registered(settings, model_uri or settings.resolved_model_uri)
    if model_path is not None:
        settings = settings.model_copy(update={"model_path": model_path})
    holder = ModelHolder()
    if not load_bundled(settings, holder):
        raise ModelLoadError(holder.reason or "model not loaded")
    return holder.require()


def load_registered(settings: Settings, uri: str) -> LoadedModel:
    """The model ``uri`` points at now, through the service's own resolve + load + checks.

    :raises ModelLoadError: no tracking URI, registry unreachable, or the model is rejected.
    """
    if not settings.mlflow_tracking_uri:
        raise ModelLoadError(f"{uri} needs MLFLOW_TRACKING_URI")
    from .registry import fetch
    from .registry.client import client_for

    client = client_for(settings.mlflow_tracking_uri)
    try:
        target = fetch.resolve(client, uri)
        model = fetch.load(client, target, fetch.LoadPolicy.from_settings(settings))
    except (fetch.RegistryUnavailable, fetch.CandidateRejected) as exc:
        raise ModelLoadError(f"{uri}: {exc}") from exc
    log.info("model_loaded %s from %s", model.version, uri,
             extra={"event": "model_loaded", "model_version": model.version, "source": model.source, "uri": uri})
    return model
