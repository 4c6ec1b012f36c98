"""Save the bundled model as an MLflow pyfunc model (for ``mlflow models serve``): run in the mlflow venv.

    python bench/peer_apps/mlflow_model.py <output dir>

The pyfunc takes a DataFrame of rides (``{"dataframe_records": [ride, ...]}`` at /invocations).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mlflow.pyfunc

HERE = Path(__file__).resolve().parent


class RideDurationPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # noqa: ANN001 - MLflow's signature
        from peer_model import PeerModel

        self.model = PeerModel()

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        return self.model.predict(model_input.to_dict("records"))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    mlflow.pyfunc.save_model(str(out), python_model=RideDurationPyfunc(), code_paths=[str(HERE / "peer_model.py")])
