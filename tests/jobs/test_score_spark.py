"""``score --engine spark``: the registered MLflow model through ``mlflow.pyfunc.spark_udf`` gives the
default engine's rows, columns and predictions (to 1e-9), on synthetic rows and on a real month.

The Spark side runs once for the module, as a user runs it: ``.venv/bin/python -m ride_duration score
--engine spark`` in a subprocess whose PATH finds the system's ``python3`` (no pandas) and without
PYSPARK_PYTHON, over an existing ``--output`` with ``--overwrite``. Its one input holds the synthetic
rows that cannot be scored or that the API would refuse (first, in row groups of 1,000) and then every
row of the real 2021-02 file, as read from it (its own schema and values; skipped without the TLC
files). One Spark run thus serves the synthetic and the real-month comparisons and the "no activated
venv" acceptance: each JVM and each Python worker that imports mlflow is a fixed cost of tens of
seconds on this machine, the rows are not. The default engine scores the same file in-process.

The model is trained and registered by the training job (``train.main --register``, the code path of
``train.py --register``, default feature step) into the shared real ``mlflow server``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

from ride_duration.errors import ExitCode
from ride_duration.jobs import cli, score
from tests.conftest import require_real
from tests.support import untraced
from tests.synthetic import ROOT, make_rides, real_month, write_month

pytestmark = pytest.mark.slow
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyspark")

NAME = "spark-test"
URI = f"models:/{NAME}@production"
RTOL = 1e-9
ODD_ROWS = 2300
REAL = "2021-02"
SPARK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""Each Spark driver here is one short JVM: the client compiler only and one GC thread cost a third
less CPU than the default (C2 JIT and parallel GC threads on a 2-core box: 66 -> 43 CPU s for the CLI
run), and the rows and predictions are the same. Given as ``SPARK_SUBMIT_OPTS``, which spark-submit
adds to the driver's java command line; a user's own value is kept."""


@pytest.fixture(scope="module", autouse=True)
def _short_jvms() -> None:
    """The in-process session too (tests/conftest.py restores the environment after the module)."""
    os.environ.setdefault("SPARK_SUBMIT_OPTS", SPARK_JVM)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, mlflow_server) -> t.Iterator[str]:
    """The shared MLflow server (tests/conftest.py) holding ``spark-test`` v1 @production, trained on
    synthetic months."""
    from ride_duration.jobs import train

    base = tmp_path_factory.mktemp("spark-registry")
    train_file, valid = write_month(base / "train.parquet", 6000, seed=21), write_month(
        base / "valid.parquet", 3000, seed=22, month="2021-02")
    saved = dict(os.environ)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
    assert train.main(["--train-data", str(train_file), "--valid-data", str(valid), "--no-bundle", "--register",
                       "--model-name", NAME]) == ExitCode.OK
    yield mlflow_server.url
    os.environ.clear()
    os.environ.update(saved)


def odd_rows() -> pa.Table:
    """TLC-shaped rows with rows that cannot be scored or that the API would refuse."""
    import pandas as pd

    frame = make_rides(ODD_ROWS, seed=31, month="2021-02")
    frame["PULocationID"] = frame["PULocationID"].astype("Int64")
    frame.loc[5, "PULocationID"] = pd.NA
    frame.loc[17, "trip_distance"] = float("nan")
    frame.loc[31, "trip_distance"] = -1.0
    frame.loc[450, "trip_distance"] = 1234.5       # implausible: flagged by the feature step, API would refuse
    frame.loc[451, "trip_distance"] = 0.0          # zero distance: flagged
    frame.loc[1999, "DOLocationID"] = 1200
    # microsecond timestamps, as the TLC files have (Spark refuses TIMESTAMP(NANOS) Parquet columns)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.cast(pa.schema([pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
                                 for f in table.schema]), safe=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The odd rows, then (when the file is there) the real month's rows in the real file's schema."""
    odd = odd_rows()
    real = real_month(REAL)
    if real is not None:
        month = pq.read_table(real)
        odd = pa.table({f.name: odd.column(f.name).cast(f.type) if f.name in odd.column_names
                        else pa.nulls(odd.num_rows, f.type) for f in month.schema}, schema=month.schema)
        odd = pa.concat_tables([odd, month])
    path = tmp_path_factory.mktemp("spark-input") / "rides.parquet"
    pq.write_table(odd, path, row_group_size=1000)
    return path


@pytest.fixture(scope="module")
def scored(registered, source, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """``(the Spark CLI run, its output directory, the default engine's output)`` for ``source``.

    An existing non-empty ``--output`` is replaced because ``--overwrite`` is given."""
    tmp = tmp_path_factory.mktemp("spark-cli")
    output = tmp / "out.parquet"
    output.mkdir()
    (output / "old-part.parquet").write_bytes(b"earlier results")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp), "MLFLOW_TRACKING_URI": registered,
           "SPARK_SUBMIT_OPTS": os.environ["SPARK_SUBMIT_OPTS"]}
    done = subprocess.run([sys.executable, "-m", "ride_duration", "score", "--engine", "spark", "--master", "local[2]",
                           "--input", str(source), "--output", str(output), "--overwrite", "--model-uri", URI],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    local = tmp / "local.parquet"
    with untraced():  # the reference, not the subject (tests/jobs/test_score.py covers the default engine)
        assert run_score(source, local, "local") == 0
    return done, output, local


def run_score(source: Path, output: Path, engine: str, **extra) -> int:
    args = argparse.Namespace(input=source, output=output, model_path=None, model_uri=URI, chunk_rows=400,
                              engine=engine, master="local[1]", **extra)
    return cli.execute(score.run, args, "score")


def both_engines(scored, start: int, stop: int | None = None) -> tuple[pa.Table, pa.Table]:
    """The default engine's and Spark's rows ``start:stop`` (the CLI run must have succeeded)."""
    done, output, local = scored
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local_table, spark_table = pq.read_table(local), pq.read_table(output)
    stop = local_table.num_rows if stop is None else stop
    return local_table.slice(start, stop - start), spark_table.slice(start, stop - start)


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


def test_synthetic_rows_match_the_default_engine(scored):
    local, spark_out = both_engines(scored, 0, ODD_ROWS)

    assert_same(local, spark_out)
    rows = spark_out.to_pylist()
    assert rows[5]["reason"] == "missing PULocationID" and rows[5]["predicted_duration"] is None
    assert rows[31]["reason"] == "trip_distance is negative or not finite"
    assert "scored anyway" in rows[450]["reason"] and rows[450]["predicted_duration"] is not None
    assert set(spark_out.column("model_version").to_pylist()) == {f"{NAME}-v1"}
    assert spark_out.column("predicted_duration").null_count == 3


def test_a_real_month_matches_the_default_engine(scored):
    month = pq.read_table(require_real(REAL))
    local, spark_out = both_engines(scored, ODD_ROWS)

    assert_same(local, spark_out)
    assert spark_out.num_rows == month.num_rows
    for name in ("lpep_pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"):  # the file's own rows
        assert spark_out.column(name).to_pylist() == month.column(name).to_pylist(), name
    assert spark_out.column("ride_id").to_pylist() == list(range(ODD_ROWS, ODD_ROWS + month.num_rows))


def test_the_cli_runs_spark_without_an_activated_venv(scored, source):
    """The module's Spark run: ``.venv/bin/python -m ride_duration score --engine spark`` with a PATH whose
    ``python3`` is the system's (no pandas) and no PYSPARK_PYTHON: local mode gives the workers the CLI's
    own interpreter. An existing non-empty ``--output`` is replaced because ``--overwrite`` is given."""
    done, output, _ = scored
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (output / "old-part.parquet").exists()
    table = pq.read_table(output)
    assert table.num_rows == pq.ParquetFile(source).metadata.num_rows
    assert table.column("ride_id").to_pylist() == list(range(table.num_rows))
    assert table.column("predicted_duration").null_count == 3  # the three odd rows that cannot be scored


def test_a_missing_model_column_fails_without_output(registered, tmp_path):
    """In-process, on a local[1] session (no UI) that ``score`` finds active: refused while planning."""
    from ride_duration.jobs.score_spark import session

    source, output = tmp_path / "bad.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"PULocationID": [1], "DOLocationID": [2]}), source)
    spark = session("local[1]", "ride-duration-tests", {"spark.ui.enabled": "false", "spark.driver.memory": "1g"})
    try:
        assert run_score(source, output, "spark") == 2
    finally:
        spark.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_the_cli_offers_the_engines(capsys):
    from ride_duration.__main__ import main

    with pytest.raises(SystemExit) as exc:  # python -m ride_duration's main, in-process
        main(["score", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "{local,spark}" in out and "--master" in out


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
