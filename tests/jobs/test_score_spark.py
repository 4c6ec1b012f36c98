"""``score --engine spark``: the registered MLflow model through ``mlflow.pyfunc.spark_udf`` gives the
default engine's rows, columns and predictions (to 1e-9), on synthetic rows and on a real month.

One real ``mlflow server`` and one SparkSession (local[2], no UI, loopback) for the module; the model
is trained and registered by ``train.py --register`` as a user runs it (default feature step).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ride_duration.jobs import cli, score
from tests.conftest import require_real
from tests.synthetic import ROOT, make_rides, write_month

pytestmark = pytest.mark.slow
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyspark")

NAME = "spark-test"
URI = f"models:/{NAME}@production"
RTOL = 1e-9


@pytest.fixture(scope="module")
def spark():
    from ride_duration.jobs.score_spark import session

    spark = session("local[2]", "ride-duration-tests", {
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "1g"})
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlflow_server) -> str:
    """The shared MLflow server (tests/conftest.py) holding ``spark-test`` v1 @production, trained on
    synthetic months."""
    base = tmp_path_factory.mktemp("spark-registry")
    train, valid = write_month(base / "train.parquet", 6000, seed=21), write_month(
        base / "valid.parquet", 3000, seed=22, month="2021-02")
    registry = mlflow_server
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.url}
    done = subprocess.run([sys.executable, "train.py", "--train-data", str(train), "--valid-data", str(valid),
                           "--no-bundle", "--register", "--model-name", NAME],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = registry.url
    yield registry.url
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def odd_rows(tmp_path_factory) -> Path:
    """TLC-shaped rows in 3 row groups, with rows that cannot be scored or that the API would refuse."""
    import pandas as pd

    frame = make_rides(2300, seed=31, month="2021-02")
    frame["PULocationID"] = frame["PULocationID"].astype("Int64")
    frame.loc[5, "PULocationID"] = pd.NA
    frame.loc[17, "trip_distance"] = float("nan")
    frame.loc[31, "trip_distance"] = -1.0
    frame.loc[450, "trip_distance"] = 1234.5       # implausible: flagged by the feature step, API would refuse
    frame.loc[451, "trip_distance"] = 0.0          # zero distance: flagged
    frame.loc[1999, "DOLocationID"] = 1200
    path = tmp_path_factory.mktemp("odd") / "rides.parquet"
    # microsecond timestamps, as the TLC files have (Spark refuses TIMESTAMP(NANOS) Parquet columns)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=1000,
                   coerce_timestamps="us", allow_truncated_timestamps=True)
    return path


def run_score(source: Path, output: Path, engine: str, **extra) -> int:
    args = argparse.Namespace(input=source, output=output, model_path=None, model_uri=URI, chunk_rows=400,
                              engine=engine, master=None, **extra)
    return cli.execute(score.run, args, "score")


def both_engines(source: Path, tmp_path: Path) -> tuple[pa.Table, pa.Table]:
    local, spark = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    assert run_score(source, local, "local") == 0
    assert run_score(source, spark, "spark") == 0
    return pq.read_table(local), pq.read_table(spark)


def assert_same(local: pa.Table, spark: pa.Table) -> None:
    assert spark.schema.names == local.schema.names
    assert [f.type for f in spark.schema] == [f.type for f in local.schema]
    assert spark.num_rows == local.num_rows
    for name in local.schema.names:
        expected, actual = local.column(name).to_pylist(), spark.column(name).to_pylist()
        if name in ("predicted_duration", "actual_duration"):
            bad = [i for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                   if (e is None) != (a is None) or (e is not None and not math.isclose(a, e, rel_tol=RTOL,
                                                                                        abs_tol=1e-12))]
            assert not bad, f"{name}: {len(bad)} rows differ, first {bad[:5]}"
        else:
            assert actual == expected, name


def test_synthetic_rows_match_the_default_engine(spark, registered, odd_rows, tmp_path):
    local, spark_out = both_engines(odd_rows, tmp_path)

    assert_same(local, spark_out)
    rows = spark_out.to_pylist()
    assert rows[5]["reason"] == "missing PULocationID" and rows[5]["predicted_duration"] is None
    assert rows[31]["reason"] == "trip_distance is negative or not finite"
    assert "scored anyway" in rows[450]["reason"] and rows[450]["predicted_duration"] is not None
    assert set(spark_out.column("model_version").to_pylist()) == {f"{NAME}-v1"}
    assert spark_out.column("predicted_duration").null_count == 3


def test_a_real_month_matches_the_default_engine(spark, registered, tmp_path):
    source = require_real("2021-02")
    local, spark_out = both_engines(source, tmp_path)

    assert_same(local, spark_out)
    assert spark_out.num_rows == pq.ParquetFile(source).metadata.num_rows
    assert spark_out.column("ride_id").to_pylist() == list(range(spark_out.num_rows))


def test_a_missing_model_column_fails_without_output(spark, registered, tmp_path):
    source, output = tmp_path / "bad.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"PULocationID": [1], "DOLocationID": [2]}), source)

    assert run_score(source, output, "spark") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_the_cli_offers_the_engines():
    out = subprocess.run([sys.executable, "-m", "ride_duration", "score", "--help"], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert "{local,spark}" in out and "--master" in out


def test_the_cli_runs_spark_without_an_activated_venv(tmp_path):
    """``.venv/bin/python -m ride_duration score --engine spark`` with a PATH whose ``python3`` is the
    system's (no pandas) and no PYSPARK_PYTHON: local mode gives the workers the CLI's own interpreter.
    An existing non-empty ``--output`` is replaced because ``--overwrite`` is given."""
    source = tmp_path / "rides.parquet"
    pq.write_table(pa.Table.from_pandas(make_rides(500, seed=31), preserve_index=False), source,
                   coerce_timestamps="us", allow_truncated_timestamps=True)  # Spark refuses nanoseconds
    output = tmp_path / "out.parquet"
    output.mkdir()
    (output / "old-part.parquet").write_bytes(b"earlier results")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ride_duration", "score", "--engine", "spark", "--master", "local[1]",
                           "--input", str(source), "--output", str(output), "--overwrite"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (output / "old-part.parquet").exists()
    table = pq.read_table(output)
    assert table.num_rows == 500 and table.column("predicted_duration").null_count == 0


def test_the_row_checks_reach_a_worker_that_loaded_the_model_first(tmp_path):
    """A worker whose path starts with the model's ``code_paths`` package (``ride_duration`` with only
    ``features.py``) still runs the row checks: they travel by value, not as an import."""
    from pyspark import cloudpickle

    from ride_duration.jobs import score_spark
    from ride_duration.registry.mlflow_model import write_code_package

    score_spark.ship_row_checks_by_value()
    (tmp_path / "udf.pkl").write_bytes(cloudpickle.dumps(score_spark.check_rows))
    code = write_code_package(tmp_path / "code").parent
    probe = ("import pickle, sys; import pandas as pd; sys.path.insert(0, sys.argv[1]); import ride_duration; "
             "assert ride_duration.__file__.startswith(sys.argv[1]); f = pickle.load(open(sys.argv[2], 'rb')); "
             "print(f(pd.Series([1, None]), pd.Series([2, 3]), pd.Series([1.5, 2.0]))['reason'].tolist())")
    done = subprocess.run([sys.executable, "-c", probe, str(code), str(tmp_path / "udf.pkl")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[None, 'missing PULocationID']"
