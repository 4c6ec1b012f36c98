"""NYC green-taxi ride-duration prediction service.

``create_app()`` (in :mod:`ride_duration.app`) builds the Flask app. It is imported lazily, so
the offline jobs (``python -m ride_duration …``) do not pay for Flask.

Layers, each importing only those below it (``tests/test_architecture.py`` checks this):

* base: ``config``, ``errors``, ``features``, ``schemas``, ``logs``
* ``model``: the loaded model, its checks and the holder it is swapped in
* ``registry``: the MLflow registry (fetch, watch, hand-off, model format, promotion)
* ``startup``: the one place that chooses registry or bundled model
* ``web``: HTTP routes, request IDs, access log, metrics; ``protocols``: MLflow scoring, V2, OpenAPI
* ``jobs``: offline commands (train, score, …); ``app``: the factory that composes web and protocols
"""

from __future__ import annotations

import typing as t

from .config import Settings

if t.TYPE_CHECKING:
    from .app import create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> t.Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
