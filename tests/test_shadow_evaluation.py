"""Issue 20's acceptance: a challenger scored in the shadow of live traffic, then judged on the true durations.

A real MLflow server holds two versions trained on different synthetic months, v1 as ``@production``
and v2 as ``@challenger``. The real service (gunicorn) serves v1 with the prediction log on and
``SHADOW_MODEL_URI=models:/<name>@challenger`` at rate 1. Rides posted with ride ids are answered
by v1 and echo their ids; the shadow lines appear in the log off the response path (polled for);
``evaluate`` on the log and the rides' true durations gives per version the RMSE that scoring the
same rides with that version directly (``mlflow.pyfunc`` in the test) gives, to 1e-6.
"""

from __future__ import annotations

import argparse
import json
import typing as t
import uuid
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression

from ride_duration.__main__ import main
from ride_duration.errors import ExitCode
from ride_duration.features import prepare_features
from ride_duration.jobs import data
from ride_duration.registry import shadow_evidence
from tests.support import http, post_json, running, wait_until
from tests.synthetic import make_rides, write_month

pytestmark = pytest.mark.slow

INPUTS = ["PULocationID", "DOLocationID", "trip_distance"]
RIDES = 40


def register(name: str, month: Path, alias: str) -> str:
    """Train on ``month`` and register the version as ``promote`` logs it (skops, signed when configured)."""
    import mlflow

    from ride_duration.registry.register import log_and_register

    rides = data.read_rides(str(month))
    dv = DictVectorizer()
    lr = LinearRegression().fit(dv.fit_transform(prepare_features(rides[INPUTS].to_dict("records"))),
                                rides["duration"])
    info = {"trained_at": "2026-12-06T00:00:00+00:00", "metrics": {"valid_rmse": 1.0},
            "train_data": {"source": str(month), "rows": len(rides)},
            "valid_data": {"source": str(month), "rows": 500}, "params": {"model": "LinearRegression"},
            "feature_step": None}
    version, _ = log_and_register(argparse.Namespace(experiment="shadow-evaluation"), name, dv, lr, info,
                                  rides.head(500))
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return version


@pytest.fixture(scope="module")
def versions(mlflow_server: t.Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """(model name, v1, v2): two versions trained on months with different duration-per-mile slopes."""
    import mlflow

    tmp = tmp_path_factory.mktemp("shadow-months")
    name = f"shadow-eval-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server.url)
    v1 = register(name, write_month(tmp / "v1.parquet", n=3000, seed=31), "production")
    v2 = register(name, write_month(tmp / "v2.parquet", n=3000, seed=32, slope=3.5), "challenger")
    return name, v1, v2


def log_lines(directory: Path) -> list[dict[str, t.Any]]:
    lines = []
    for path in sorted(directory.glob("predictions-*.jsonl*")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def test_evaluate_gives_each_version_the_rmse_of_scoring_the_rides_directly(versions, mlflow_server, tmp_path,
                                                                            tmp_path_factory):
    import mlflow.pyfunc

    name, v1, v2 = versions
    label = {v1: f"{name}-v{v1}", v2: f"{name}-v{v2}"}
    log_dir = tmp_path / "prediction-log"
    rides = make_rides(RIDES, seed=33).assign(ride_id=[f"ride-{i}" for i in range(RIDES)])
    rides["actual_duration"] = (rides["lpep_dropoff_datetime"] - rides["lpep_pickup_datetime"]).dt.total_seconds() / 60
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_NAME": name, "MODEL_POLL_SECONDS": "0",
           "PREDICTION_LOG_DIR": str(log_dir), "PREDICTION_LOG_SAMPLE_RATE": "1",
           "SHADOW_MODEL_URI": f"models:/{name}@challenger", "SHADOW_SAMPLE_RATE": "1"}

    with running(tmp_path_factory, env, workers=2) as server:
        wait_until(lambda: json.loads(http("GET", server.url + "/ready")[2]).get("shadow", {}).get("model_version")
                   == label[v2], 60, "the challenger as the shadow model on /ready")
        for ride in rides[["ride_id", *INPUTS]].to_dict("records"):
            status, _, body = post_json(server.url + "/predict", ride)
            assert status == 200, body
            assert body["model_version"] == label[v1] and body["ride_id"] == ride["ride_id"], body
        wait_until(lambda: {line["ride_id"] for line in log_lines(log_dir) if line.get("role") == "shadow"}
                   >= set(rides["ride_id"]), 60, "a shadow line for every ride in the prediction log")

    actuals = tmp_path / "actuals.parquet"
    rides[["ride_id", "actual_duration"]].to_parquet(actuals, index=False)
    out = tmp_path / "report"
    assert main(["evaluate", "--predictions", str(log_dir), "--actuals", str(actuals),
                 "--report-dir", str(out)]) == ExitCode.OK
    report = json.loads((out / "report.json").read_text())

    inside = rides["actual_duration"].between(1, 60).to_numpy()
    direct_rmse = {}
    for version, role in ((v1, "served"), (v2, "shadow")):
        direct = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rides[INPUTS])
        error = (np.asarray(direct, dtype=float) - rides["actual_duration"].to_numpy())[inside]
        direct_rmse[version] = float(np.sqrt(np.mean(error**2)))
        got = report["versions"][label[version]]
        assert (got["role"], got["n"]) == (role, int(inside.sum()))
        assert got["rmse"] == pytest.approx(direct_rmse[version], abs=1e-6)
    assert abs(direct_rmse[v1] - direct_rmse[v2]) > 0.1  # two different models: a mix-up of versions would show
    [pair] = report["comparisons"]
    assert (pair["champion"], pair["challenger"], pair["n"]) == (label[v1], label[v2], int(inside.sum()))
    # the promotion gate reads this report as it is (the same labels, the same numbers)
    [evidence] = shadow_evidence.read_report(out / "report.json").comparisons
    assert evidence.champion == shadow_evidence.label(name, v1)
    assert evidence.challenger == shadow_evidence.label(name, v2)
    assert evidence.challenger_rmse == pytest.approx(direct_rmse[v2], abs=1e-6)
    assert report["rides"]["predicted"] == RIDES
    assert report["rides"]["outside_filter"] == int((~inside).sum())
