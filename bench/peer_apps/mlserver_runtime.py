"""MLServer custom runtime for the bundled model (Open Inference Protocol V2 at /v2/models/<name>/infer).

The request carries one ride as three named inputs, as a V2 client would send it::

    {"inputs": [{"name": "PULocationID", "shape": [1], "datatype": "INT64", "data": [43]},
                {"name": "DOLocationID", "shape": [1], "datatype": "INT64", "data": [151]},
                {"name": "trip_distance", "shape": [1], "datatype": "FP64", "data": [1.01]}]}
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_model import PeerModel  # noqa: E402


class RideDurationRuntime(MLModel):
    async def load(self) -> bool:
        self.model = PeerModel()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        columns = {inp.name: list(inp.data) for inp in payload.inputs}
        n = len(columns["trip_distance"])
        rides = [{name: columns[name][i] for name in columns} for i in range(n)]
        durations = self.model.predict(rides)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="duration", shape=[n], datatype="FP64", data=durations)])
