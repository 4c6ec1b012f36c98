"""The registered model's format and the registry plumbing that needs no server (fast)."""

from __future__ import annotations

import os
import pickle
from types import SimpleNamespace

import pytest

from ride_duration.features import rides_to_features
from ride_duration.model.loading import load_file
from ride_duration.model.predictor import GOLDEN_RIDES, ModelCheckError
from ride_duration.registry.fetch import MODELS_URI, RUNS_URI, Target, located, resolve
from ride_duration.registry.handoff import Handoff
from ride_duration.registry.mlflow_model import (
    build_pipeline,
    example_rides,
    pipeline_step,
    split_pipeline,
    write_code_package,
)
from tests.conftest import BUNDLED


@pytest.fixture(scope="module")
def pair():
    return pickle.loads((BUNDLED / "lin_reg.bin").read_bytes())


def test_pipeline_takes_raw_rides_and_splits_back_into_the_served_pair(pair):
    bundled = load_file(BUNDLED / "lin_reg.bin")
    pipeline = build_pipeline(*pair, bundled.step)
    rides = list(GOLDEN_RIDES) + [{"PULocationID": 10, "DOLocationID": 50, "trip_distance": d} for d in (0, 31, 400)]
    expected = bundled.predict_general(rides).tolist()
    actual = pipeline.predict(rides).tolist()
    assert actual == expected
    loaded = pickle.loads(pickle.dumps(pipeline))
    dv, regressor = split_pipeline(loaded)
    assert dv.feature_names_ == pair[0].feature_names_
    assert regressor.predict(dv.transform(rides_to_features(rides, bundled.step.to_dict()))).tolist() == expected
    assert pipeline_step(loaded) == bundled.step


def test_a_pipeline_without_step_arguments_is_the_course_step(pair):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from ride_duration.features import COURSE_STEP, rides_to_features

    old = Pipeline([("features", FunctionTransformer(rides_to_features)), ("dv", pair[0]), ("regressor", pair[1])])
    assert pipeline_step(old) == COURSE_STEP
    with pytest.raises(ModelCheckError, match="does not make"):
        build_pipeline(*pair)  # the bundled pair was trained with monotone-v3: logging it as course-v1 is refused
    bad = build_pipeline(*pair, load_file(BUNDLED / "lin_reg.bin").step)
    bad.steps[0][1].kw_args = {"step": {"name": "cubic-v9"}}
    with pytest.raises(ModelCheckError, match="unknown feature step 'cubic-v9'"):
        pipeline_step(bad)


def test_split_pipeline_refuses_other_shapes(pair):
    from sklearn.pipeline import Pipeline

    with pytest.raises(ModelCheckError):
        split_pipeline(Pipeline([("dv", pair[0]), ("lr", pair[1])]))
    with pytest.raises(ModelCheckError):
        split_pipeline({"not": "a model"})
    assert split_pipeline(pair) == pair


@pytest.mark.parametrize("example", [
    {"columns": ["PULocationID", "DOLocationID", "trip_distance"], "data": [[1, 2, 3.0]]},
    {"dataframe_split": {"columns": ["PULocationID", "DOLocationID", "trip_distance"], "data": [[1, 2, 3.0]]}},
    {"dataframe_records": [{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 3.0}]},
    [{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 3.0}],
    {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 3.0},
])
def test_example_rides_reads_every_logged_form(example):
    assert example_rides(example) == [{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 3.0}]


@pytest.mark.parametrize("example", [{"columns": ["a"], "data": [[1]]}, "text", {"columns": ["x"], "data": [[1, 2]]}])
def test_example_rides_refuses_examples_without_ride_columns(example):
    with pytest.raises(ModelCheckError):
        example_rides(example)


def test_code_package_holds_only_the_feature_step_and_the_monotone_regressor(tmp_path):
    package = write_code_package(tmp_path)
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "features.py", "model"]
    assert sorted(p.name for p in (package / "model").iterdir()) == ["__init__.py", "monotone.py"]
    for module in (package / "features.py", package / "model" / "monotone.py"):
        assert "flask" not in module.read_text().lower()


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/nyc@production", ("nyc", "production", None)),
    ("models:/nyc/Production", ("nyc", None, "Production")),
    ("models:/nyc/3", ("nyc", None, "3")),
    ("models:/nyc/latest", ("nyc", None, "latest")),
])
def test_model_uri_forms(uri, expected):
    match = MODELS_URI.match(uri)
    assert match is not None and (match["name"], match["alias"], match["ref"]) == expected


def test_runs_uri():
    match = RUNS_URI.match("runs:/abc123/model")
    assert match is not None and (match["run_id"], match["path"]) == ("abc123", "model")


def test_handoff_round_trip_and_refuses_a_shared_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    handoff = Handoff(owner_pid=4242)
    model = load_file(BUNDLED / "lin_reg.bin")
    target = Target("models:/m@production", "mlflow-artifacts:/x", name="m", version="7", alias="production")
    handoff.save_model(target.key, target, model)
    handoff.save_rejected({"m/8": "NaN"})
    current, rejected = handoff.read()
    assert current is not None
    key, restored_target, restored = current
    assert (key, restored_target, restored.version, rejected) == ("m/7", target, model.version, {"m/8": "NaN"})
    assert restored.predict(list(GOLDEN_RIDES)) == model.predict(list(GOLDEN_RIDES))

    os.chmod(handoff.dir, 0o777)  # someone else could have written it: never unpickle  # noqa: S103 - world-writable on purpose: it must be refused
    assert handoff.read() == (None, {})
    handoff.clear()
    os.chmod(handoff.dir, 0o700)
    assert handoff.read() == (None, {})


class RecordingClient:
    """Stands in for ``MlflowClient`` in a unit test of which registry calls a poll makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_model_version_by_alias(self, name: str, alias: str) -> SimpleNamespace:
        self.calls.append("get_model_version_by_alias")
        return SimpleNamespace(name=name, version="7", run_id="r1", tags={})

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        self.calls.append("get_model_version_download_uri")
        return f"mlflow-artifacts:/1/{name}-v{version}/artifacts"


def test_a_poll_is_one_registry_request_and_the_files_are_located_only_to_load():
    client = RecordingClient()
    target = resolve(client, "models:/taxi@production")
    assert client.calls == ["get_model_version_by_alias"]
    assert (target.key, target.label, target.artifact_uri) == ("taxi/7", "taxi-v7", "")
    assert located(client, target).artifact_uri == "mlflow-artifacts:/1/taxi-v7/artifacts"
    assert client.calls == ["get_model_version_by_alias", "get_model_version_download_uri"]
    run = resolve(client, "runs:/abc123/model")
    assert located(client, run) is run and run.artifact_uri == "runs:/abc123/model"
    assert len(client.calls) == 2
