"""BentoML service for the bundled model: ``POST /predict`` with ``{"ride": {...}}``."""

from __future__ import annotations

import os
import sys
import typing as t
from pathlib import Path

import bentoml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_model import PeerModel  # noqa: E402


@bentoml.service(workers=int(os.environ.get("PEER_WORKERS", "2")))
class RideDuration:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api
    def predict(self, ride: dict[str, t.Any]) -> dict[str, float]:
        return {"duration": self.model.predict([ride])[0]}
