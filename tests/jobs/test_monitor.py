"""``python -m ride_duration monitor``: drift, data quality and model quality, on synthetic and real months."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ride_duration.__main__ import main
from ride_duration.errors import ExitCode
from ride_duration.jobs import checks
from ride_duration.model.loading import load_file
from tests.conftest import BUNDLED, require_real
from tests.synthetic import make_rides, write_month

FEATURES = {"PULocationID", "DOLocationID", "trip_distance"}


def run_monitor(reference: Path | str, current: Path | str, out: Path, *extra: str,
                model: Path = BUNDLED / "lin_reg.bin") -> tuple[int, dict]:
    code = main(["monitor", "--reference", str(reference), "--current", str(current), "--report-dir", str(out),
                 "--model-path", str(model), *extra])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return code, report


def expected_quality(month: Path, model: Path = BUNDLED / "lin_reg.bin") -> dict:
    """RMSE/MAE/bias/n computed here, apart from the jobs' code: the rides of 1-60 minutes that
    batch scoring scores (docs/registry.md: whole zone IDs and a finite distance >= 0, present; values
    beyond the API's limits are scored anyway), the bundle's own predictions, plain numpy; and the
    plausible ones among them (docs/model.md: 0 < miles <= 60, under 80 mph)."""
    frame = pd.read_parquet(month)
    actual = (frame["lpep_dropoff_datetime"] - frame["lpep_pickup_datetime"]).dt.total_seconds() / 60
    zones = frame[["PULocationID", "DOLocationID"]].astype(float)
    distance = frame["trip_distance"].astype(float)
    keep = (actual.between(1, 60) & zones.notna().all(axis=1) & (zones % 1 == 0).all(axis=1)
            & np.isfinite(distance) & (distance >= 0))
    rides = [{"PULocationID": int(r.PULocationID), "DOLocationID": int(r.DOLocationID),
              "trip_distance": float(r.trip_distance)} for r in frame.loc[keep].itertuples()]
    error = np.asarray(load_file(model).predict(rides), dtype=float) - actual[keep].to_numpy(dtype=float)
    miles, minutes = distance[keep].to_numpy(dtype=float), actual[keep].to_numpy(dtype=float)
    plausible = (miles > 0) & (miles <= 60) & (miles / (minutes / 60) < 80)
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))),
            "bias": float(np.mean(error)), "n": int(keep.sum()),
            "rmse_plausible": float(np.sqrt(np.mean(error[plausible] ** 2))), "n_plausible": int(plausible.sum())}


def same_quality(got: dict, want: dict) -> bool:
    return got["n"] == want["n"] and all(got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12)
                                         for k in ("rmse", "mae", "bias", "rmse_plausible"))


def prom_samples(path: Path) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text()) for s in family.samples}


@pytest.fixture(scope="module")
def months(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("monitor")
    return {
        "old": write_month(base / "old.parquet", n=4000, seed=1),
        "old2": write_month(base / "old2.parquet", n=4000, seed=2),
        "new": write_month(base / "new.parquet", n=4000, seed=3, zones=45, slope=4.0),
    }


@pytest.fixture(scope="module")
def old_model(months, tmp_path_factory) -> Path:
    """A model trained on the synthetic "old" world with the training job's fit."""
    from ride_duration.jobs import data, train

    dv, lr, rmse = train.fit(data.read_rides(str(months["old"])), data.read_rides(str(months["old2"])))
    directory = tmp_path_factory.mktemp("old-model")
    train.write_bundle(directory, dv, lr, {"metrics": {"valid_rmse": rmse}})
    return directory / "lin_reg.bin"


def test_a_month_against_itself_reports_no_drift(months, tmp_path):
    code, report = run_monitor(months["old"], months["old"], tmp_path, "--fail-on-drift")
    assert code == ExitCode.OK
    assert report["drift_detected"] is False
    assert set(report["features"]) == FEATURES
    for result in (*report["features"].values(), report["prediction"]):
        assert result["drift"] is False and result["score"] == 0.0
        assert result["method"] and result["threshold"] == 0.1  # > 1,000 rows: Evidently's distances
    assert report["features"]["PULocationID"]["method"] == "Jensen-Shannon distance"
    assert report["features"]["trip_distance"]["method"] == "Wasserstein distance (normed)"
    assert report["quality"] == report["reference_quality"]
    assert {p.name for p in tmp_path.iterdir()} >= {"report.json", "report.html", "evidently.html", "metrics.prom"}


def test_a_shifted_month_drifts_and_fail_on_drift_exits_4(months, old_model, tmp_path):
    code, report = run_monitor(months["old"], months["new"], tmp_path / "a", model=old_model)
    assert code == ExitCode.OK and report["drift_detected"] is True
    assert report["features"]["PULocationID"]["drift"] is True  # zones 1-45 instead of 1-30
    assert report["features"]["PULocationID"]["score"] > report["features"]["PULocationID"]["threshold"]
    assert report["quality"]["rmse"] > report["reference_quality"]["rmse"]  # 4 min/mile, not 2.5
    assert report["quality"]["bias"] < 0  # the old model predicts too short
    code, _ = run_monitor(months["old"], months["new"], tmp_path / "b", "--fail-on-drift", model=old_model)
    assert code == ExitCode.DRIFT

    prom = prom_samples(tmp_path / "a" / "metrics.prom")
    score = report["features"]["DOLocationID"]["score"]
    assert prom[("ride_duration_monitor_drift_score", (("feature", "DOLocationID"),
                                                      ("method", "Jensen-Shannon distance")))] == score
    assert prom[("ride_duration_monitor_dataset_drift_detected", ())] == 1.0
    assert prom[("ride_duration_monitor_rmse_minutes", ())] == report["quality"]["rmse"]
    assert prom[("ride_duration_monitor_rmse_plausible_minutes", ())] == report["quality"]["rmse_plausible"]


def test_same_distribution_other_draw_is_not_drift(months, tmp_path):
    _, report = run_monitor(months["old"], months["old2"], tmp_path)
    assert report["drift_detected"] is False
    assert all(0 < r["score"] < r["threshold"] for r in report["features"].values())


def test_quality_equals_an_independent_computation_on_the_same_rides(months, old_model, tmp_path):
    _, report = run_monitor(months["old"], months["new"], tmp_path / "r", model=old_model)
    assert same_quality(report["quality"], expected_quality(months["new"], old_model)), report["quality"]
    assert same_quality(report["reference_quality"], expected_quality(months["old"], old_model))


def test_data_quality_rules_find_missing_out_of_range_and_implausible_rows(tmp_path):
    frame = make_rides(3000, seed=5)
    frame.loc[0:59, "trip_distance"] = 150_000.0  # 60 rides of 150,000 miles in under an hour
    frame.loc[60:99, "PULocationID"] = 0  # outside 1-999
    frame["trip_distance"] = frame["trip_distance"].astype("float64")
    frame.loc[100:139, "trip_distance"] = np.nan
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    _, report = run_monitor(path, path, tmp_path / "r")
    rules = {r["name"]: r for r in report["data_quality"]["rules"]}
    assert report["data_quality"]["passed"] is False
    assert rules["missing_trip_distance"]["rows"] == 40 and rules["missing_trip_distance"]["failed"] is True
    assert rules["missing_PULocationID"]["failed"] is False
    assert rules["outside_api_limits"]["zone_rows"] == 40 and rules["outside_api_limits"]["distance_rows"] == 60
    assert rules["implausible_speed"]["failed"] is True and rules["implausible_speed"]["rows"] >= 55
    assert rules["mean_trip_distance"]["value"] > checks.MAX_MEAN_TRIP_DISTANCE
    assert rules["mean_trip_distance"]["failed"] is True


def test_clean_month_passes_data_quality(tmp_path):
    frame = make_rides(3000, seed=6)
    minutes = (frame["lpep_dropoff_datetime"] - frame["lpep_pickup_datetime"]).dt.total_seconds() / 60
    frame = frame.loc[frame["trip_distance"] < minutes]  # under 60 mph (the generator's noise makes a few faster)
    path = tmp_path / "clean.parquet"
    frame.to_parquet(path, index=False)
    _, report = run_monitor(path, path, tmp_path / "r")
    assert report["data_quality"]["passed"] is True, report["data_quality"]
    assert {r["name"] for r in report["data_quality"]["rules"]} == {
        "missing_PULocationID", "missing_DOLocationID", "missing_trip_distance", "outside_api_limits",
        "implausible_speed", "mean_trip_distance"}


def test_unreadable_source_exits_2_and_bad_model_exits_1(months, tmp_path):
    code, _ = run_monitor(months["old"], tmp_path / "nope.parquet", tmp_path / "r")
    assert code == ExitCode.BAD_INPUT and not (tmp_path / "r" / "report.json").exists()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a model")
    code = main(["monitor", "--reference", str(months["old"]), "--current", str(months["old"]),
                 "--report-dir", str(tmp_path / "m"), "--model-path", str(bad)])
    assert code == ExitCode.ERROR


def test_sampling_is_seeded(months, tmp_path):
    _, first = run_monitor(months["old"], months["new"], tmp_path / "a", "--sample-rows", "1500")
    _, second = run_monitor(months["old"], months["new"], tmp_path / "b", "--sample-rows", "1500")
    assert first["features"] == second["features"]
    assert first["evidently"]["sample_rows"] == 1500
    assert first["features"]["PULocationID"]["method"] == "Jensen-Shannon distance"  # 1,500 rows: still > 1,000


# ---- the real months (../shared/data) ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.untraced  # real-month twins of the synthetic tests above (same code); tracing doubled their CPU
def test_real_2021_02_against_itself_reports_no_drift(tmp_path):
    february = require_real("2021-02")
    code, report = run_monitor(february, february, tmp_path, "--fail-on-drift")
    assert code == ExitCode.OK and report["drift_detected"] is False
    bundled = json.loads((Path(__file__).resolve().parents[2] / "model" / "metadata.json").read_text())
    assert math.isclose(report["quality"]["rmse"], bundled["metrics"]["valid_rmse"], abs_tol=1e-6)  # same rides
    assert math.isclose(report["quality"]["rmse_plausible"], bundled["metrics"]["valid_rmse_plausible"], abs_tol=1e-6)
    assert report["quality"]["n_plausible"] == bundled["plausibility"]["valid_plausible"]
    assert report["quality"]["n"] == 61921


@pytest.mark.slow
@pytest.mark.untraced
@pytest.mark.parametrize("month", ["2022-02", "2023-01", "2024-03"])
def test_real_months_drift_from_2021_02_with_the_independent_rmse(month, tmp_path):
    february, current = require_real("2021-02"), require_real(month)
    code, report = run_monitor(february, current, tmp_path / "r", "--fail-on-drift")
    assert code == ExitCode.DRIFT and report["drift_detected"] is True
    assert report["features"]["PULocationID"]["drift"] is True
    assert same_quality(report["quality"], expected_quality(current)), report["quality"]
    assert report["quality"]["bias"] < -0.5  # the 2021 model predicts too short on later months
    rules = {r["name"]: r for r in report["data_quality"]["rules"]}
    assert rules["mean_trip_distance"]["failed"] is (month == "2022-02")  # 98 miles in 2022-02


def test_pushgateway_receives_the_same_metrics(months, tmp_path):
    """``--pushgateway``: a PUT of the text format to /metrics/job/ride_duration_monitor (a loopback receiver)."""
    import http.server
    import threading

    received: list[tuple[str, str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - http.server's naming
            received.append((self.command, self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, report = run_monitor(months["old"], months["new"], tmp_path, "--pushgateway",
                                   f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert code == ExitCode.OK
    ((method, path, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/ride_duration_monitor")
    assert body.decode() == (tmp_path / "metrics.prom").read_text()
