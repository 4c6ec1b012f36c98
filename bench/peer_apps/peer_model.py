"""The bundled model as a peer serves it: the same pickle, metadata and feature step as the service.

Loaded by MLServer, BentoML and MLflow in their own virtualenvs, which have scikit-learn and
numpy but not this project: ``ride_duration/features.py`` and ``ride_duration/model/monotone.py``
(the bundled regressor's class; standard library, numpy and scikit-learn only) are imported from
the repository's files under empty stand-ins for their packages (whose ``__init__`` would import
the service), so the features and the model are the service's own, not copies.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
import types
import typing as t
from pathlib import Path

ROOT = Path(os.environ.get("PEER_REPO_ROOT") or Path(__file__).resolve().parents[2])
MODEL_PATH = Path(os.environ.get("PEER_MODEL_PATH") or ROOT / "model" / "lin_reg.bin")
FEATURES_PATH = ROOT / "ride_duration" / "features.py"


def _features() -> t.Any:
    """``ride_duration.features``, with ``ride_duration`` and ``ride_duration.model`` as bare packages
    over the repository's folders (so unpickling the bundled ``MonotoneDuration`` finds its module)."""
    package_dir = FEATURES_PATH.parent
    for name, folder in (("ride_duration", package_dir), ("ride_duration.model", package_dir / "model")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
    return importlib.import_module("ride_duration.features")


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
