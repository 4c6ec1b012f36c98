"""``python -m ride_duration score``: streamed batch scoring with the service's model and features.

The scored fixture and ``--model-uri`` run the command as a process; the other cases call its ``main``
in-process (the same code path, without a new interpreter and its imports per case)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUNDLED
from tests.synthetic import ROOT, make_rides, real_month

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

METADATA = json.loads((BUNDLED / "metadata.json").read_text())


def score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ride_duration", "score", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "INFO"})


def score_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``python -m ride_duration score ARGS`` through its ``main`` here: (exit code, stdout)."""
    from ride_duration.__main__ import main

    capsys.readouterr()
    code = main(["score", *args])
    return code, capsys.readouterr().out


def log_lines(result: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path, object]:
    """2 300 TLC-shaped rows in 3 row groups, with rows the CLI must keep but cannot (fully) score,
    scored with ``--chunk-rows 400`` (6 chunks)."""
    import pandas as pd

    frame = make_rides(2300, seed=11, month="2021-02")
    frame["PULocationID"] = frame["PULocationID"].astype("Int64")
    frame.loc[5, "PULocationID"] = pd.NA           # missing zone: not scored
    frame.loc[17, "trip_distance"] = float("nan")  # missing distance: not scored
    frame.loc[31, "trip_distance"] = -1.0          # impossible distance: not scored
    frame.loc[450, "trip_distance"] = 1234.5       # beyond the API limit: scored, with a note
    frame.loc[1999, "DOLocationID"] = 1200         # zone beyond the API range: scored, with a note
    base = tmp_path_factory.mktemp("score")
    source, output = base / "rides.parquet", base / "predictions.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=1000)
    result = score("--input", str(source), "--output", str(output), "--chunk-rows", "400")
    assert result.returncode == 0, result.stdout + result.stderr
    return source, output, result


def test_every_row_comes_back_in_input_order(generated):
    source, output, result = generated
    expected = pq.read_table(source)
    actual = pq.read_table(output)

    assert actual.num_rows == expected.num_rows == 2300
    assert actual.column("ride_id").to_pylist() == list(range(2300))
    for name in ("VendorID", "lpep_pickup_datetime", "lpep_dropoff_datetime", "PULocationID", "DOLocationID"):
        assert actual.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert set(actual.column("model_version").to_pylist()) == {METADATA["version"]}
    done = [line for line in log_lines(result) if line.get("event") == "score_done"]
    assert len(done) == 1 and done[0]["rows"] == 2300 and done[0]["not_scored"] == 3


def test_unusable_rows_are_kept_with_a_reason(generated):
    _, output, _ = generated
    rows = pq.read_table(output).to_pylist()

    assert [(rows[i]["predicted_duration"], rows[i]["reason"]) for i in (5, 17, 31)] == [
        (None, "missing PULocationID"), (None, "missing trip_distance"),
        (None, "trip_distance is negative or not finite")]
    for i in (450, 1999):
        assert rows[i]["predicted_duration"] is not None and "scored anyway" in rows[i]["reason"]
    ordinary = [r for i, r in enumerate(rows) if i not in (5, 17, 31, 450, 1999)]
    assert all(r["reason"] is None and r["predicted_duration"] is not None for r in ordinary)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("row", "ride", "reason"), [
    ((None, 50, 2.0), None, "missing PULocationID"),
    ((10, NAN, 2.0), None, "missing DOLocationID"),
    ((10.5, 50, 2.0), None, "PULocationID is not an integer"),
    ((10, 50, None), None, "missing trip_distance"),
    ((10, 50, NAN), None, "missing trip_distance"),
    ((10, 50, -1.0), None, "trip_distance is negative or not finite"),
    ((10, 50, INF), None, "trip_distance is negative or not finite"),
    ((10.0, 50, 2), {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 2.0}, None),
    ((10, 1200, 2.0), {"PULocationID": 10, "DOLocationID": 1200, "trip_distance": 2.0},
     "DOLocationID outside the API range 1-999; scored anyway"),
    ((10, 50, 1234.5), {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 1234.5},
     "trip_distance above the API limit of 1000 miles; scored anyway"),
])
def test_check_row_scores_or_gives_the_reason(row, ride, reason):
    """The per-row decision both engines share (``jobs/rows.check_row``): the CLI runs above check it
    end to end in a subprocess, this checks every branch in process."""
    from ride_duration.jobs.rows import check_row

    got_ride, got_reason = check_row(*row)
    assert got_reason == reason
    assert got_ride == ride
    if ride is not None:
        assert all(type(got_ride[k]) is type(ride[k]) for k in ride)  # whole zones are ints, distances floats


def test_predictions_equal_the_service(generated, client):
    source, output, _ = generated
    inputs = pq.read_table(source).to_pylist()
    rows = pq.read_table(output).to_pylist()
    ids = [i for i, r in enumerate(rows) if r["reason"] is None]
    rides = [{k: inputs[i][k] for k in ("PULocationID", "DOLocationID", "trip_distance")} for i in ids]

    response = client.post("/predict", json=rides)

    assert response.status_code == 200
    assert [rows[i]["predicted_duration"] for i in ids] == response.get_json()["durations"]
    single = client.post("/predict", json=rides[0]).get_json()["duration"]
    assert rows[ids[0]]["predicted_duration"] == single


def test_actual_duration_is_dropoff_minus_pickup_in_minutes(generated):
    _, output, _ = generated
    table = pq.read_table(output).slice(0, 50)
    # From the integer timestamps: Python datetimes would drop the nanoseconds pandas 2 writes.
    pickup, dropoff = (table[name] for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime"))
    per_minute = 60.0 * {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[pickup.type.unit]
    starts, ends = (column.cast(pa.int64()).to_pylist() for column in (pickup, dropoff))
    for actual, start, end in zip(table["actual_duration"].to_pylist(), starts, ends, strict=True):
        assert actual == pytest.approx((end - start) / per_minute, abs=1e-9)


def test_input_without_a_model_column_fails_without_output(tmp_path, capsys):
    source, output = tmp_path / "bad.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"PULocationID": [1], "DOLocationID": [2]}), source)

    code, out = score_in_process(capsys, "--input", str(source), "--output", str(output))

    assert code == 2
    assert "trip_distance" in out
    assert list(tmp_path.iterdir()) == [source]


def test_rmse_on_the_validation_month_matches_the_model_metadata(tmp_path, capsys):
    month = METADATA["valid_data"]["source"].rsplit("_", 1)[-1].removesuffix(".parquet")
    source = real_month(month)
    if source is None:
        pytest.skip(f"real TLC file for {month} not found (set TLC_DATA_DIR; default ../shared/data)")
    output = tmp_path / "predictions.parquet"

    code, out = score_in_process(capsys, "--input", str(source), "--output", str(output))

    assert code == 0, out[-3000:]
    table = pq.read_table(output, columns=["actual_duration", "predicted_duration"])
    pairs = [(a, p) for a, p in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
             if a is not None and 1.0 <= a <= 60.0 and p is not None]
    rmse = math.sqrt(sum((a - p) ** 2 for a, p in pairs) / len(pairs))
    assert len(pairs) == METADATA["valid_data"]["rows"]
    assert rmse == pytest.approx(METADATA["metrics"]["valid_rmse"], abs=1e-6)


@pytest.mark.slow
def test_model_uri_scores_with_the_registered_model(tmp_path, synthetic_months, mlflow_server, monkeypatch):
    """``--model-uri`` goes through the service's registry resolve + load + checks. The model is
    registered by the training job in this process (``train.py --register``'s ``main``); the scoring is
    the real CLI process."""
    from ride_duration.errors import ExitCode
    from ride_duration.jobs import train as train_job

    train, valid = synthetic_months
    output = tmp_path / "predictions.parquet"
    registry = mlflow_server  # the shared server (tests/conftest.py); "cli-test" is this test's model
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": registry.url}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
    assert train_job.main(["--train-data", str(train), "--valid-data", str(valid), "--no-bundle", "--register",
                           "--model-name", "cli-test"]) == ExitCode.OK
    result = subprocess.run([sys.executable, "-m", "ride_duration", "score", "--input", str(valid), "--output",
                             str(output), "--model-uri", "models:/cli-test@production"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    table = pq.read_table(output)
    assert set(table.column("model_version").to_pylist()) == {"cli-test-v1"}
    assert table.num_rows == pq.ParquetFile(valid).metadata.num_rows
    assert table.column("predicted_duration").null_count == 0


def test_model_uri_without_a_tracking_server_fails_loudly(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out = score_in_process(capsys, "--input", str(tmp_path / "x.parquet"), "--output",
                                 str(tmp_path / "y.parquet"), "--model-uri", "models:/x@production")
    assert code == 1
    assert "needs MLFLOW_TRACKING_URI" in out
