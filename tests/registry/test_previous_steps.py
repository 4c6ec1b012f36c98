"""A registered ``flagged-v2`` version (the step before ``monotone-v3``) still serves from a real registry.

The step is read from the logged artifact (the pipeline's ``FunctionTransformer`` arguments), not
from the code's default, and the plausibility warnings apply to it too (the global rule).
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from ride_duration import create_app
from ride_duration.features import FLAGGED, FeatureStep
from ride_duration.jobs import data, train
from ride_duration.model.predictor import GOLDEN_RIDES, LoadedModel
from ride_duration.startup import get_holder
from tests.registry.test_registry import mlflow_client, months, register, registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_a_registered_flagged_v2_version_serves_with_its_own_step(
        registry: t.Any, months: dict[str, Path], mlflow_client: t.Any) -> None:  # noqa: F811
    step = FeatureStep(FLAGGED, 30.0)
    rides = data.read_rides(str(months["weak"]))
    dv, lr, _ = train.fit(rides, rides, step, alpha=1.0)
    register("flagged", dv, lr, months["valid"], step=step.to_dict())

    app = create_app({"mlflow_tracking_uri": registry.url, "model_uri": "models:/flagged@production",
                      "model_poll_seconds": 0})
    model = get_holder(app).require()
    expected = LoadedModel.build(dv, lr, version="local", source="test", step=step)
    probe = [*GOLDEN_RIDES, {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 250.0}]
    assert model.source == "registry" and model.step == step
    assert type(model.regressor).__name__ == "Ridge" and model.fast is not None
    assert model.predict(probe) == expected.predict(probe)
    assert (len(probe) - 1, "distance_over_max") in model.warnings(probe)
