"""Shadow scoring in the service: ``SHADOW_MODEL_URI`` on, the scorer at ``app.extensions["shadow"]``.

The prediction endpoints' shared tail (:func:`ride_duration.web.api.after_predict`) submits each
request's rides, served predictions and ``(time, request_id, endpoint)``; the scorer
(:mod:`ride_duration.model.shadow`) scores a sampled share off the response path and writes its
results as ``"role": "shadow"`` lines of the prediction log (when ``PREDICTION_LOG_DIR`` is set)
and into ``/metrics``. ``/ready`` shows the shadow's state. Each worker starts its own watcher
and scorer after the fork.
"""

from __future__ import annotations

import logging
import typing as t

from ..model.shadow import ShadowResult, ShadowScorer
from ..startup import follow_shadow

if t.TYPE_CHECKING:
    from flask import Flask

    from ..config import Settings
    from .prediction_log import PredictionLog

log = logging.getLogger(__name__)


def log_sink(prediction_log: PredictionLog) -> t.Callable[[ShadowResult], None]:
    """Shadow results → the prediction log's shadow lines."""
    def sink(result: ShadowResult) -> None:
        prediction_log.shadow(result.context, result.rides, result.predictions, result.version, result.served,
                              result.served_version)
    return sink


def init_app(app: Flask, settings: Settings) -> ShadowScorer | None:
    """After ``prediction_log.init_app``: follow the shadow model and score a share of the requests."""
    followed = follow_shadow(settings, background=False)
    if followed is None:
        return None
    holder, watcher = followed
    prediction_log = app.extensions.get("prediction_log")
    scorer = ShadowScorer(holder, settings.shadow_sample_rate, settings.shadow_queue,
                          log_sink(prediction_log) if prediction_log is not None else None,
                          uri=settings.shadow_model_uri)
    app.extensions["shadow"] = scorer
    hooks = app.extensions.setdefault("post_fork", [])
    if watcher is not None:
        app.extensions["shadow_registry"] = watcher
        hooks.append(watcher.start)
    hooks.append(scorer.start)
    log.info("shadow scoring on: %s at sample rate %s (%s)", settings.shadow_model_uri, settings.shadow_sample_rate,
             scorer.state()["model_version"] or holder.reason, extra={"event": "shadow_on"})
    return scorer
