"""Batch scoring on Spark: ``python -m ride_duration score --engine spark``.

The registered MLflow model is applied by ``mlflow.pyfunc.spark_udf`` (Spark local mode by
default, any cluster by ``--master`` or ``spark-submit``). The pyfunc is the logged pipeline,
so it applies the same feature step (``ride_duration.features``) the service does. Row checks
(``rows.check_row``, same ``reason`` texts) run as a pandas UDF; everything else is Spark SQL.

Output: the default engine's columns, in the same order and types (``ride_id`` = the row's
index in the input file), written as a Parquet *directory* (Spark's part files; pyarrow,
pandas and Spark read it as one table). As with the default engine it is written beside
``--output`` and renamed at the end.

Without ``--model-uri`` the bundled (or ``--model-path``) model is saved as a temporary
MLflow model (the same pipeline ``train.py --register`` logs) and applied the same way.

Needs pyspark (the ``spark`` Pipfile category) plus mlflow and pandas (``train``); imported
lazily by ``score.run`` only when ``--engine spark`` is asked for.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from ..errors import JobError
from .rows import INPUTS, InputError, check_row, plan_columns

if t.TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ..model.predictor import LoadedModel

LOCAL_MASTER = "local[*]"
LOOPBACK_CONF = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
"""Local mode binds the driver to loopback only."""
WORKER_PYTHON = "PYSPARK_PYTHON"
"""The Python Spark starts its workers with (pyspark reads it when the context starts; default
``python3`` from PATH). Local mode sets it to this process's interpreter unless it is set already."""
CHECKED = "struct<PULocationID:bigint,DOLocationID:bigint,trip_distance:double,reason:string>"


def session(master: str | None = None, app_name: str = "ride-duration-score",
            conf: t.Mapping[str, str] | None = None) -> SparkSession:
    """The active SparkSession, else a new one on ``master`` (spark-submit's, else ``local[*]``)."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    master = master or SparkConf().get("spark.master", None) or LOCAL_MASTER
    builder = builder.master(master).config("spark.sql.session.timeZone", "UTC")
    settings = dict(LOOPBACK_CONF) if master.startswith("local") else {}
    if master.startswith("local"):
        # The workers are this machine's processes: give them this interpreter (the venv's, with pandas
        # and pyarrow), not whatever python3 PATH finds first (an un-activated venv: the system's).
        os.environ.setdefault(WORKER_PYTHON, sys.executable)
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if master.startswith("local"):
        quiet_local_logs(spark)
    return spark


def ship_row_checks_by_value() -> None:
    """Pickle the row-check UDF with its code, not as ``ride_duration.jobs…`` references.

    ``spark_udf`` puts the model's ``code_paths`` (a minimal ``ride_duration`` package with
    ``features.py`` only, ``registry.mlflow_model.write_code_package``) first on a worker's path; a
    worker that loaded the model before it runs the row checks would then fail to import
    ``ride_duration.jobs`` (seen on the real month: ``ModuleNotFoundError``).
    """
    from pyspark import cloudpickle

    from . import rows

    for module in (rows, sys.modules[__name__]):
        cloudpickle.register_pickle_by_value(module)


def cause(exc: BaseException) -> str:
    """The line of a Spark failure that says what went wrong: the last ``SomeError: …`` line of the
    (Python worker's or JVM's) trace it carries, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.$]+(Error|Exception): ", line)]
    return named[-1] if named else (lines[0] if lines else type(exc).__name__)


def quiet_local_logs(spark: SparkSession) -> None:
    """Local mode: Spark's own console log (log4j, which prints every failed task's stack trace) only
    at DEBUG; the job reports a failure as one line (``--debug`` shows Spark's log)."""
    import logging

    spark.sparkContext.setLogLevel("WARN" if logging.getLogger().isEnabledFor(logging.DEBUG) else "OFF")


def check_rows(pu, do, dist):  # no annotations: pandas_udf would read (string) hints as its UDF kind
    """Scalar pandas UDF body: ``rows.check_row`` per row -> (zone, zone, distance, reason)."""
    import pandas as pd

    def one(p: t.Any, d: t.Any, x: t.Any) -> tuple[t.Any, ...]:
        ride, reason = check_row(None if pd.isna(p) else p, None if pd.isna(d) else d,
                                 None if pd.isna(x) else float(x))
        if ride is None:
            return None, None, None, reason
        return ride["PULocationID"], ride["DOLocationID"], ride["trip_distance"], reason

    rows = [one(*row) for row in zip(pu.astype(object), do.astype(object), dist.astype(object), strict=True)]
    frame = pd.DataFrame(rows, columns=["PULocationID", "DOLocationID", "trip_distance", "reason"])
    return frame.astype({"PULocationID": "Int64", "DOLocationID": "Int64", "trip_distance": "Float64"})


def with_ride_id(frame: DataFrame) -> DataFrame:
    """``ride_id``: the row's position in the input (partition offsets + position in the partition)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mid = F.monotonically_increasing_id()
    frame = frame.withColumn("_part", F.spark_partition_id()).withColumn("_pos", mid.bitwiseAND((1 << 33) - 1))
    counts = frame.groupBy("_part").count()
    before = F.sum("count").over(Window.orderBy("_part").rowsBetween(Window.unboundedPreceding, -1))
    offsets = counts.select("_part", F.coalesce(before, F.lit(0)).alias("_offset"))
    return (frame.join(F.broadcast(offsets), "_part")
            .withColumn("ride_id", (F.col("_offset") + F.col("_pos")).cast("long"))
            .drop("_part", "_pos", "_offset"))


def actual_minutes(times: tuple[str, str] | None, types: dict[str, str]) -> t.Any:
    """Drop-off minus pickup in minutes (microseconds / 1e6 / 60, as the default engine)."""
    from pyspark.sql import functions as F

    if times is None or not all(types[c].startswith("timestamp") for c in times):
        return F.lit(None).cast("double")
    start, end = (F.unix_micros(F.col(c).cast("timestamp")) for c in times)
    return (end - start).cast("double") / F.lit(1e6) / F.lit(60.0)


def pyfunc_uri(model_uri: str | None, model: LoadedModel, tmp: Path) -> str:
    """The model for ``spark_udf``: the registry version pinned, or the loaded file saved as an MLflow model."""
    if model_uri is not None:
        name, version = model.info.get("name"), model.info.get("registered_version")
        return f"models:/{name}/{version}" if name and version else model_uri
    import mlflow.sklearn

    from ..registry.mlflow_model import build_pipeline, write_code_package

    path = tmp / "model"
    mlflow.sklearn.save_model(build_pipeline(model.dv, model.regressor, model.step), str(path),
                              serialization_format="cloudpickle",
                              code_paths=[str(write_code_package(tmp / "code"))])
    return str(path)


def score_frame(spark: SparkSession, frame: DataFrame, model: LoadedModel, model_uri: str | None,
                tmp: Path, partitions: int | None = None, source: t.Any = "input") -> DataFrame:
    """The output frame (default engine's columns) for a frame of TLC rows."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    ship_row_checks_by_value()
    read, times = plan_columns(frame.columns, dict(frame.dtypes), source)
    frame = with_ride_id(frame.select(*read))
    frame = frame.repartition(partitions or spark.sparkContext.defaultParallelism)
    checker = F.pandas_udf(check_rows, CHECKED)
    frame = frame.withColumn("_ok", checker(*(F.col(c) for c in INPUTS)))
    udf = mlflow.pyfunc.spark_udf(spark, pyfunc_uri(model_uri, model, tmp), result_type="double",
                                  env_manager="local")
    ride = F.struct(*(F.coalesce(F.col(f"_ok.{c}"), F.lit(d)).alias(c)
                      for c, d in zip(INPUTS, (1, 1, 0.0), strict=True)))
    scored = F.col("_ok.PULocationID").isNotNull()
    types = dict(frame.dtypes)
    return frame.select(
        "ride_id", *read,
        actual_minutes(times, types).alias("actual_duration"),
        F.when(scored, udf(ride)).cast("double").alias("predicted_duration"),
        F.lit(model.version).alias("model_version"),
        F.col("_ok.reason").alias("reason"),
    ).orderBy("ride_id")


def score_file(input_path: Path, output_path: Path, model: LoadedModel, model_uri: str | None = None,
               spark: SparkSession | None = None, master: str | None = None) -> dict[str, t.Any]:
    """Score ``input_path`` into the Parquet directory ``output_path``; returns counts for the summary line.

    ``output_path`` is replaced if it exists (``score`` refuses a non-empty one without ``--overwrite``).

    :raises InputError: the input cannot be read or lacks a model input column.
    :raises JobError: Spark failed while scoring (exit 1; the first line of its error).
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    started = time.perf_counter()
    spark = spark or session(master)
    try:
        frame = spark.read.parquet(str(input_path))
    except AnalysisException as exc:
        raise InputError(f"cannot read {input_path}: {str(exc).splitlines()[0]}") from exc
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial = output_path.with_name(f".{output_path.name}.{os.getpid()}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="ride-duration-spark-") as tmp:
            out = score_frame(spark, frame, model, model_uri, Path(tmp), source=input_path)
            try:
                out.write.mode("overwrite").parquet(str(partial))
            except Exception as exc:  # Py4JJavaError, PySparkException: the job failed on the cluster
                raise JobError(f"Spark could not score {input_path}: {cause(exc)[:500]}") from None
        if output_path.is_dir():
            shutil.rmtree(output_path)
        elif output_path.exists():
            output_path.unlink()
        os.replace(partial, output_path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    counts = spark.read.parquet(str(output_path)).agg(F.count(F.lit(1)).alias("rows"),
                                                      F.count("predicted_duration").alias("scored")).first()
    rows, scored = int(counts["rows"]), int(counts["scored"])
    seconds = time.perf_counter() - started
    return {"rows": rows, "scored": scored, "not_scored": rows - scored, "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds > 0 else None, "engine": "spark",
            "master": spark.sparkContext.master}
