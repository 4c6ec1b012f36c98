"""The bundled model as a peer serves it: the same pickle, metadata and feature step as the service.

Loaded by MLServer, BentoML and MLflow in their own virtualenvs, which have scikit-learn and
numpy but not this project: ``ride_duration/features.py`` (standard library + numpy only) is
loaded from its file, so the features are the service's own, not a copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
import typing as t
from pathlib import Path

ROOT = Path(os.environ.get("PEER_REPO_ROOT") or Path(__file__).resolve().parents[2])
MODEL_PATH = Path(os.environ.get("PEER_MODEL_PATH") or ROOT / "model" / "lin_reg.bin")
FEATURES_PATH = ROOT / "ride_duration" / "features.py"


def _features() -> t.Any:
    spec = importlib.util.spec_from_file_location("peer_features", FEATURES_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


class PeerModel:
    """``predict(rides) -> durations``: prepare_features, ``dv.transform``, ``regressor.predict``."""

    def __init__(self, model_path: Path = MODEL_PATH) -> None:
        features = _features()
        with open(model_path, "rb") as f_in:
            self.dv, self.regressor = pickle.load(f_in)  # noqa: S301 - the project's own bundled model
        meta_path = model_path.parent / "metadata.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.step = features.FeatureStep.from_dict(meta.get("feature_step"))
        self.prepare = features.prepare_features

    def predict(self, rides: list[dict[str, t.Any]]) -> list[float]:
        return [float(v) for v in self.regressor.predict(self.dv.transform(self.prepare(rides, self.step)))]
