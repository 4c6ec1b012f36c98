"""Registry versions for the shadow tests: the bundled weights, shifted, raising or blocking on cue.

:class:`Shifted` answers the bundled model's prediction plus ``shift`` minutes, and misbehaves on rides
of exactly :data:`POISON` miles (a distance the load checks never use, so the version passes the
service's checks like any other): ``mode="raise"`` raises, ``mode="block"`` waits until the file
``gate`` exists. The class lives here, importable by the gunicorn under test (cwd = the repository)
with the image's packages only (so this module imports no test tool: not pytest, not tests.conftest),
and is logged as a pickle, so the service needs ``ALLOW_PICKLE_MODELS=true`` to load it.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
import time
import typing as t
from pathlib import Path

import numpy as np

from ride_duration.model.loading import load_file
from ride_duration.registry.mlflow_model import SHA256_TAG, build_pipeline
from tests.support import BUNDLED, untraced

POISON = 13.37
"""A ride of this many miles makes a misbehaving version raise or block."""


class Shifted:
    """The bundled regressor's prediction + ``shift``; raises or blocks on :data:`POISON` rides."""

    def __init__(self, inner: t.Any, column: int, shift: float = 0.0, mode: str = "ok", gate: str | None = None):
        self.inner, self.column, self.shift, self.mode, self.gate = inner, column, shift, mode, gate

    def predict(self, x: t.Any) -> np.ndarray:
        distance = np.asarray(x[:, self.column].todense()).ravel() if hasattr(x, "todense") else x[:, self.column]
        if self.mode != "ok" and np.any(distance == POISON):
            if self.mode == "raise":
                raise RuntimeError("this shadow model fails on every poisoned ride")
            while not Path(str(self.gate)).exists():  # the test opens the gate after its answers
                time.sleep(0.05)
        return self.inner.predict(x) + self.shift


def bundled_pair() -> tuple[t.Any, t.Any]:
    return pickle.loads((BUNDLED / "lin_reg.bin").read_bytes())  # noqa: S301 - our own bundled file


@untraced()  # set-up, not the subject
def register(name: str, regressor: t.Any = None, alias: str | None = None) -> str:
    """Log ``regressor`` (default: the bundled one) with the bundled vectorizer as a pickled MLflow sklearn
    model tagged with its sha256, register it under ``name`` and point ``alias`` at it; returns the version."""
    import mlflow
    import mlflow.sklearn

    dv, lr = bundled_pair()
    pipeline = build_pipeline(dv, regressor if regressor is not None else lr, load_file(BUNDLED / "lin_reg.bin").step)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        mlflow.sklearn.save_model(pipeline, str(path), serialization_format="pickle", pip_requirements=["scikit-learn"])
        mlflow.set_experiment("shadow-tests")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(path), "model")
        blob = (path / "model.pkl").read_bytes()
    client = mlflow.MlflowClient()
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    client.set_model_version_tag(name, version, SHA256_TAG, hashlib.sha256(blob).hexdigest())
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def shifted(shift: float, mode: str = "ok", gate: Path | None = None) -> Shifted:
    dv, lr = bundled_pair()
    return Shifted(lr, dv.feature_names_.index("trip_distance"), shift, mode, str(gate) if gate else None)
