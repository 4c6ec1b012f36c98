"""NYC green-taxi ride-duration prediction service.

``create_app()`` builds the Flask app: settings from the environment (plus
``overrides`` for tests), JSON errors, request IDs, the start-up model, routes.
"""

from __future__ import annotations

import typing as t

from flask import Flask

from .config import Settings

__all__ = ["Settings", "create_app"]


def create_app(overrides: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the app. ``overrides`` are :class:`Settings` fields that win over the environment."""
    settings = Settings(**dict(overrides or {}))
    app = Flask(__name__)
    app.config.from_mapping(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_BATCH_SIZE=settings.max_batch_size,
        JSON_SORT_KEYS=False,
    )

    from . import api, errors, holder, request_id

    errors.init_app(app)
    request_id.init_app(app)
    holder.init_app(app, settings)
    app.register_blueprint(api.bp)
    return app
