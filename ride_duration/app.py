"""The application factory: settings, JSON errors and logs, request IDs, the start-up model, the routes.

It composes the layers below it (:mod:`.web`, :mod:`.protocols`, :mod:`.startup`); nothing
imports this module but ``predict.py`` (through ``ride_duration.create_app``) and the tests.
"""

from __future__ import annotations

import typing as t

from flask import Flask

from .config import Settings


def create_app(overrides: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app. ``overrides`` are :class:`Settings` fields that win over the environment."""
    settings = Settings(**dict(overrides or {}))
    app = Flask("ride_duration", static_folder=None)  # no /static: every route is the API's
    app.config.from_mapping(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_BATCH_SIZE=settings.max_batch_size,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep "code" before "message"

    from . import errors, startup
    from .protocols import docs, mlflow_scoring, v2
    from .web import access_log, api, auth, body_deadline, metrics, prediction_log, request_id, shadow

    access_log.init_app(app, settings)  # first: JSON logs before the model loads; its access line runs last
    errors.init_app(app)
    request_id.init_app(app)
    body_deadline.init_app(app, settings)  # 408 for bodies that trickle (after the request ID)
    auth.init_app(app, settings)  # bearer tokens on the prediction routes when API_TOKENS_FILE is set
    holder = startup.init_app(app, settings)
    metrics.init_app(app, holder)
    prediction_log.init_app(app, settings)  # off unless PREDICTION_LOG_DIR is set
    shadow.init_app(app, settings)  # off unless SHADOW_MODEL_URI is set (after the log: its shadow lines)
    app.register_blueprint(api.bp)
    app.register_blueprint(mlflow_scoring.bp)  # /invocations, /ping, /version
    app.register_blueprint(v2.bp)  # Open Inference Protocol V2 under /v2
    app.register_blueprint(docs.bp)  # /openapi.json, /docs
    return app
