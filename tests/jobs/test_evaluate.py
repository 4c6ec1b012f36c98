"""``python -m ride_duration evaluate`` on a hand-written prediction log and actual durations.

The log below is written line by line; the expected numbers are computed here with numpy from the
(prediction, actual) pairs listed beside it, not by the job's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ride_duration.__main__ import main
from ride_duration.errors import ExitCode
from ride_duration.jobs import sources
from tests.synthetic import make_rides

V1, V2 = "nyc-taxi-ride-duration-v1", "nyc-taxi-ride-duration-v2"


def served(time: str, ride: object, prediction: object, distance: float, version: str = V1, **extra: object) -> dict:
    line = {"time": f"2026-12-01T{time}Z", "request_id": f"r-{ride}", "endpoint": "/predict", "role": "served",
            "ride_id": ride, "model_version": version, "PULocationID": 10, "DOLocationID": 50,
            "trip_distance": distance, "prediction": prediction}
    return {**line, **extra}


def shadow(time: str, ride: object, prediction: float, served_prediction: float, distance: float) -> dict:
    return {"time": f"2026-12-01T{time}Z", "request_id": f"r-{ride}", "endpoint": "/predict", "role": "shadow",
            "ride_id": ride, "model_version": V2, "prediction": prediction, "served_model_version": V1,
            "served_prediction": served_prediction, "PULocationID": 10, "DOLocationID": 50, "trip_distance": distance}


def write_lines(path: Path, lines: list[object]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """One worker's rotated file and live file, and a second worker's file."""
    logs = tmp_path / "log"
    logs.mkdir()
    write_lines(logs / "predictions-100.jsonl.1", [                       # rotated: the older lines
        served("10:00:00", 1, 10.0, 2.0),
        served("10:00:01", 2, 30.0, 5.0),                                  # superseded by the retry below
        shadow("10:00:02", 1, 12.0, 10.0, 2.0),
    ])
    write_lines(logs / "predictions-100.jsonl", [
        served("10:05:00", 2, 20.0, 5.0),                                  # the retry: the latest line counts
        shadow("10:05:01", 2, 18.0, 20.0, 5.0),
        served("10:06:00", 3, 15.0, 0.0),                                  # distance 0: not plausible
        shadow("10:06:01", 3, 14.0, 15.0, 0.0),
        {"time": "2026-12-01T10:06:30Z", "endpoint": "/predict", "model_version": V1, "PULocationID": 1,
         "DOLocationID": 2, "trip_distance": 1.0, "prediction": 9.0},     # an older line: no role, no ride id
        '{"time": "2026-12-01T10:0',                                        # cut by a crash mid-write
    ])
    write_lines(logs / "predictions-200.jsonl", [
        served("10:07:00", "a7", 40.0, 10.0),                               # actual 75 min: outside 1-60
        shadow("10:07:01", "a7", 50.0, 40.0, 10.0),
        served("10:08:00", "r8", 8.0, 1.0),                                 # no actual yet
        shadow("10:09:00", 4, 25.0, 22.0, 6.0),                             # its served line was not sampled
        shadow("10:09:00", 4, 25.0, 22.0, 6.0),                             # delivered twice
        served("10:10:00", 5, "abc", 1.0),                                  # not a number: unusable
    ])
    return logs


@pytest.fixture
def actuals_csv(tmp_path: Path) -> Path:
    path = tmp_path / "actuals.csv"
    path.write_text("ride_id,actual_duration\n1,11.0\n2,19.0\n3,16.5\n4,24.0\na7,75.0\n99,10.0\n")
    return path


def metrics(pairs: list[tuple[float, float, bool]]) -> dict[str, float]:
    """(prediction, actual, plausible) → the numbers, plain numpy."""
    prediction, actual, plausible = (np.array(column) for column in zip(*pairs, strict=True))
    error = prediction - actual
    return {"n": len(error), "rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))),
            "bias": float(np.mean(error)), "plausible_n": int(plausible.sum()),
            "plausible_rmse": float(np.sqrt(np.mean(error[plausible] ** 2)))}


# rides 1, 2, 3, 4 have actuals inside 1-60 minutes; ride 3 (0 miles) is not plausible
EXPECTED = {V1: metrics([(10.0, 11.0, True), (20.0, 19.0, True), (15.0, 16.5, False), (22.0, 24.0, True)]),
            V2: metrics([(12.0, 11.0, True), (18.0, 19.0, True), (14.0, 16.5, False), (25.0, 24.0, True)])}


def run(*argv: str) -> int:
    try:
        return main(["evaluate", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_a_hand_written_log_gives_the_independently_computed_numbers(log_dir, actuals_csv, tmp_path):
    out = tmp_path / "report"
    assert run("--predictions", str(log_dir), "--actuals", str(actuals_csv), "--report-dir", str(out)) == ExitCode.OK

    report = json.loads((out / "report.json").read_text())
    assert report["rides"] == {"predicted": 6, "with_actuals": 5, "without_actuals": 1, "outside_filter": 1}
    assert report["filter"] == "1 <= actual_duration <= 60"
    assert report["records"] == {"records": 14, "unusable": 1, "without_ride_id": 1, "duplicates": 2}
    assert report["sources"][0]["files"] == 3 and report["sources"][0]["unreadable_lines"] == 1
    for label, role, predicted, without in ((V1, "served", 6, 1), (V2, "shadow", 5, 0)):
        got = report["versions"][label]
        assert (got["role"], got["predicted"], got["without_actuals"]) == (role, predicted, without)
        assert {k: got[k] for k in EXPECTED[label]} == pytest.approx(EXPECTED[label], rel=1e-12)
    [pair] = report["comparisons"]
    assert (pair["champion"], pair["challenger"], pair["n"]) == (V1, V2, 4)
    assert pair["champion_rmse"] == pytest.approx(EXPECTED[V1]["rmse"], rel=1e-12)
    assert pair["challenger_rmse"] == pytest.approx(EXPECTED[V2]["rmse"], rel=1e-12)
    assert pair["challenger_mae"] == pytest.approx(EXPECTED[V2]["mae"], rel=1e-12)

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families((out / "metrics.prom").read_text()) for s in f.samples}
    assert samples[("ride_duration_evaluate_rmse_minutes", (("model_version", V2), ("role", "shadow")))] == \
        pytest.approx(EXPECTED[V2]["rmse"])
    assert samples[("ride_duration_evaluate_rides", (("state", "without_actuals"),))] == 1
    page = (out / "report.html").read_text()
    assert 'id="versions-table"' in page and V2 in page and 'id="comparisons-table"' in page


def test_tlc_rows_are_actuals_by_row_index(tmp_path):
    """TLC rows without a ride_id column: the ride id is the row index, the duration drop-off - pickup."""
    rides = make_rides(6, seed=3).iloc[[0, 1, 2, 3, 4]].reset_index(drop=True)
    rides.to_parquet(tmp_path / "month.parquet", index=False)
    minutes = (rides["lpep_dropoff_datetime"] - rides["lpep_pickup_datetime"]).to_numpy() / np.timedelta64(1, "m")
    logs = tmp_path / "log"
    logs.mkdir()
    write_lines(logs / "predictions-1.jsonl", [served(f"11:00:0{i}", i, 12.0 + i, float(rides["trip_distance"][i]))
                                               for i in range(5)])
    inside = (minutes >= 1) & (minutes <= 60)
    error = (12.0 + np.arange(5) - minutes)[inside]

    out = tmp_path / "report"
    assert run("--predictions", str(logs), "--actuals", str(tmp_path / "month.parquet"), "--report-dir",
               str(out)) == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    assert report["versions"][V1]["n"] == int(inside.sum())
    assert report["versions"][V1]["rmse"] == pytest.approx(float(np.sqrt(np.mean(error**2))), rel=1e-12)


def test_monitor_reads_only_the_served_lines(log_dir):
    """A shadow line is another model's prediction of the same ride: monitor must not count it twice."""
    frame, info = sources.read_log(log_dir)
    assert len(frame) == 8  # the 14 parsed records less the 6 shadow lines
    assert sorted(frame["prediction"].dropna()) == [8.0, 9.0, 10.0, 15.0, 20.0, 30.0, 40.0]
    assert info["model_versions"] == [V1]


def test_rotated_files_are_read_oldest_first(tmp_path):
    for name in ("p-1.jsonl", "p-1.jsonl.1", "p-1.jsonl.10", "p-1.jsonl.2", "p-2.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in sources.log_files(tmp_path)] == ["p-1.jsonl.10", "p-1.jsonl.2", "p-1.jsonl.1",
                                                             "p-1.jsonl", "p-2.jsonl"]


def test_two_challengers_of_one_champion_and_tlc_rows_in_csv(tmp_path):
    """Two shadow versions of the same rides give two comparisons; TLC rows in a CSV (times as text, its own
    ride_id column) are actuals too."""
    v3 = "nyc-taxi-ride-duration-v3"
    logs = tmp_path / "log"
    logs.mkdir()
    lines = []
    for ride, (served_p, v2_p, v3_p) in {"x1": (10.0, 12.0, 9.0), "x2": (20.0, 18.0, 23.0)}.items():
        lines += [served("12:00:00", ride, served_p, 3.0), shadow("12:00:01", ride, v2_p, served_p, 3.0),
                  {**shadow("12:00:01", ride, v3_p, served_p, 3.0), "model_version": v3}]
    write_lines(logs / "predictions-7.jsonl", lines)
    (tmp_path / "tlc.csv").write_text(
        "ride_id,lpep_pickup_datetime,lpep_dropoff_datetime,trip_distance\n"
        "x1,2026-12-01 12:00:00,2026-12-01 12:11:00,3.0\n"          # 11 minutes
        "x2,2026-12-01 12:00:00,2026-12-01 12:19:30,3.0\n")         # 19.5 minutes

    out = tmp_path / "report"
    assert run("--predictions", str(logs), "--actuals", str(tmp_path / "tlc.csv"), "--report-dir",
               str(out)) == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    pairs = {(p["champion"], p["challenger"]): p for p in report["comparisons"]}
    assert set(pairs) == {(V1, V2), (V1, v3)}
    assert pairs[(V1, v3)]["challenger_rmse"] == pytest.approx(float(np.sqrt(((9 - 11) ** 2 + (23 - 19.5) ** 2) / 2)))
    assert pairs[(V1, v3)]["champion_rmse"] == pytest.approx(float(np.sqrt(((10 - 11) ** 2 + (20 - 19.5) ** 2) / 2)))
    assert report["actuals_file"]["kind"] == "tlc"
