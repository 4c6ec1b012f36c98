"""The shadow-scoring variant of ``bench/run.py``: the same registry model served with shadow off and on.

Shadow scoring needs a registry, so this starts a real ``mlflow server`` on a free loopback port
(tests/mlflow_server.py) and registers the bundled weights twice: v1 ``@production``, v2
``@challenger`` (a challenger costs what the served model costs). ``service-shadow-off`` serves v1
from the registry; ``service-shadow-on`` is the same plus ``SHADOW_MODEL_URI=...@challenger`` at
``SHADOW_SAMPLE_RATE=1.0`` (every request shadow-scored). Both load pickled versions
(``ALLOW_PICKLE_MODELS=true``, the bench's own files), so their only difference is the shadow.
"""

from __future__ import annotations

import contextlib
import os
import typing as t
from pathlib import Path

NAME = "bench-shadow"


@contextlib.contextmanager
def registry(tmp: Path) -> t.Iterator[dict[str, dict[str, str]]]:
    """A registry with v1 @production and v2 @challenger; yields each shadow server's environment."""
    from tests.mlflow_server import MlflowServer
    from tests.shadow_models import register

    with MlflowServer(tmp / "mlflow") as server:
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            register(NAME, alias="production")
            register(NAME, alias="challenger")
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved
        off = {"MLFLOW_TRACKING_URI": server.url, "MODEL_NAME": NAME, "ALLOW_PICKLE_MODELS": "true",
               "MODEL_FALLBACK": "false"}
        yield {"service-shadow-off": off,
               "service-shadow-on": {**off, "SHADOW_MODEL_URI": f"models:/{NAME}@challenger",
                                     "SHADOW_SAMPLE_RATE": "1.0"}}
