"""Batch scoring: a TLC parquet file in, a predictions parquet file out, streamed in chunks.

    python -m ride_duration score --input rides.parquet --output predictions.parquet

Same model loading as the service (the bundled file with its sha256 check, or the registry),
same features, same ``LoadedModel.predict``. The input is read ``--chunk-rows`` rows at a
time (``ParquetFile.iter_batches``) and each chunk is appended to a ``ParquetWriter``, so
memory stays at about one chunk plus one row group whatever the file size. The output is
written to a temporary file beside ``--output`` and renamed at the end: a failed run never
leaves a half file under the final name.

Output columns, one row per input row, in input order:

* ``ride_id``: the row's index in the input file (0-based);
* ``VendorID`` and the pickup/drop-off timestamps when the input has them;
* the inputs ``PULocationID``, ``DOLocationID``, ``trip_distance`` as read;
* ``actual_duration``: minutes between pickup and drop-off (null without timestamps);
* ``predicted_duration``: minutes, null when the row cannot be scored;
* ``model_version``;
* ``reason``: why ``predicted_duration`` is null (missing zone, missing or negative distance,
  non-integer zone), or a note on a scored row that ``POST /predict`` would refuse (zone
  outside 1–999, distance above 1000 miles). Such rows are scored as in training, where the
  validation RMSE included them. Null for ordinary rows.

``--engine spark`` runs the same scoring on Spark through ``mlflow.pyfunc.spark_udf``
(:mod:`ride_duration.jobs.score_spark`; ``--master`` or spark-submit picks the cluster) and
writes the same columns as a Parquet directory.

Needs pyarrow (the ``train`` Pipfile category); the service never imports this module.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import typing as t
from pathlib import Path

from ..config import Settings
from ..errors import BadInput, ExitCode
from . import cli
from .rows import ID_COLUMNS, INPUTS, TIMESTAMP_PAIRS, InputError, check_row, plan_columns, zone_problem  # noqa: F401

if t.TYPE_CHECKING:
    import pyarrow as pa

    from ..model.predictor import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 100_000
UNITS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def output_schema(schema: pa.Schema, read: list[str]) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field("ride_id", pa.int64())] + [schema.field(name) for name in read]
    fields += [pa.field("actual_duration", pa.float64()), pa.field("predicted_duration", pa.float64()),
               pa.field("model_version", pa.string()), pa.field("reason", pa.string())]
    return pa.schema(fields)


def actual_minutes(batch: pa.RecordBatch, times: tuple[str, str] | None) -> pa.Array:
    """Drop-off minus pickup in minutes (as ``data.add_duration``: seconds / 60), null without times."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if times is None:
        return pa.nulls(batch.num_rows, pa.float64())
    start, end = (batch.column(name) for name in times)
    if not (pa.types.is_timestamp(start.type) and pa.types.is_timestamp(end.type)):
        return pa.nulls(batch.num_rows, pa.float64())
    unit = max(start.type.unit, end.type.unit, key=UNITS_PER_SECOND.get)  # the finer one; units may differ
    start, end = (pc.cast(c, pa.timestamp(unit, c.type.tz)) for c in (start, end))
    ticks = pc.cast(pc.cast(pc.subtract(end, start), pa.duration(unit)), pa.int64())
    seconds = pc.divide(pc.cast(ticks, pa.float64(), safe=False), UNITS_PER_SECOND[unit])  # > 2**53 ticks: rounded
    return pc.divide(seconds, 60.0)


def score_batch(batch: pa.RecordBatch, first_row: int, model: LoadedModel, schema: pa.Schema,
                times: tuple[str, str] | None) -> tuple[pa.RecordBatch, int]:
    """One output chunk for one input chunk; also returns how many rows were scored."""
    import pyarrow as pa

    n = batch.num_rows
    columns = [batch.column(name).to_pylist() for name in INPUTS]
    rides: list[dict[str, t.Any]] = []
    positions: list[int] = []
    reasons: list[str | None] = [None] * n
    for i, (pu, do, dist) in enumerate(zip(*columns, strict=True)):
        ride, reason = check_row(pu, do, dist)
        reasons[i] = reason
        if ride is not None:
            rides.append(ride)
            positions.append(i)
    predicted: list[float | None] = [None] * n
    if rides:
        for i, value in zip(positions, model.predict(rides), strict=True):
            predicted[i] = value
    arrays = [pa.array(range(first_row, first_row + n), pa.int64())]
    arrays += [batch.column(field.name) for field in list(schema)[1:-4]]
    arrays += [actual_minutes(batch, times), pa.array(predicted, pa.float64()),
               pa.array([model.version] * n, pa.string()), pa.array(reasons, pa.string())]
    return pa.RecordBatch.from_arrays(arrays, schema=schema), len(rides)


def read_batches(source: t.Any, input_path: Path, chunk_rows: int, columns: list[str]) -> t.Iterator[pa.RecordBatch]:
    """``source.iter_batches``, with a corrupt page or column chunk reported as the file's problem.

    :raises InputError: a chunk cannot be read or decoded.
    """
    import pyarrow as pa

    batches = source.iter_batches(batch_size=chunk_rows, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {input_path}: {exc}") from None
        yield batch


def score_file(input_path: Path, output_path: Path, model: LoadedModel,
               chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, t.Any]:
    """Score ``input_path`` into ``output_path``; returns counts for the summary line.

    :raises InputError: the input cannot be read or lacks a model input column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    try:
        # pre_buffer (pyarrow's default) caches every read column chunk until the file is closed:
        # memory would grow with the file. Without it, one row group's pages at a time.
        source = pq.ParquetFile(input_path, pre_buffer=False)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {input_path}: {exc}") from None
    arrow = source.schema_arrow
    read, times = plan_columns(arrow.names, {f.name: str(f.type) for f in arrow}, input_path)
    schema = output_schema(arrow, read)
    partial = output_path.with_name(f".{output_path.name}.{os.getpid()}.partial")
    rows = scored = 0
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(partial, schema) as writer:
            for batch in read_batches(source, input_path, chunk_rows, read):
                out, n_scored = score_batch(batch, rows, model, schema, times)
                writer.write_batch(out)
                rows += batch.num_rows
                scored += n_scored
        os.replace(partial, output_path)
    except OSError as exc:
        raise BadInput(f"cannot write {output_path}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return {"rows": rows, "scored": scored, "not_scored": rows - scored, "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds > 0 else None}


def check_output(output: Path, engine: str, overwrite: bool) -> None:
    """Refuse an ``--output`` the engine would have to destroy: a directory for the local engine (it
    writes one file), anything but an empty directory for Spark unless ``--overwrite``.

    :raises BadInput: naming ``--output``.
    """
    if engine == "spark":
        if overwrite or not output.exists() or (output.is_dir() and not any(output.iterdir())):
            return
        what = "a non-empty directory" if output.is_dir() else "a file"
        raise BadInput(f"--output {output} is {what}; pass --overwrite to replace it with the Spark output")
    if output.is_dir():
        raise BadInput(f"--output {output} is a directory; the local engine writes one Parquet file")


def run(args: t.Any) -> int:
    """``score`` sub-command; exit codes: 0 done, 1 model not loadable, 2 bad input (raised as ``BadInput``)."""
    settings = Settings()
    engine = getattr(args, "engine", "local")
    check_output(args.output, engine, getattr(args, "overwrite", False))
    model = cli.load_model(args, settings)
    if engine == "spark":
        from . import score_spark

        summary = score_spark.score_file(args.input, args.output, model, args.model_uri, master=args.master)
    else:
        summary = score_file(args.input, args.output, model, args.chunk_rows)
    log.info("scored %s rows into %s", summary["rows"], args.output,
             extra={"event": "score_done", "input": str(args.input), "output": str(args.output),
                    "model_version": model.version, **summary})
    return ExitCode.OK


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``python -m ride_duration score``."""
    score = commands.add_parser("score", help="score a TLC parquet file into a predictions parquet file",
                                description="Score every row of a TLC parquet file with the service's model "
                                            "and features, streaming in chunks.")
    score.add_argument("--input", type=Path, required=True, help="TLC trip parquet (green, yellow or FHV)")
    score.add_argument("--output", type=Path, required=True, help="predictions parquet to write")
    cli.add_model_options(score)
    score.add_argument("--chunk-rows", type=cli.positive_int, default=DEFAULT_CHUNK_ROWS,
                       help=f"rows per chunk (default {DEFAULT_CHUNK_ROWS})")
    score.add_argument("--engine", choices=("local", "spark"), default="local",
                       help="local: pyarrow chunks in this process (default); spark: mlflow.pyfunc.spark_udf on "
                            "Spark, output written as a Parquet directory (needs the spark Pipfile category)")
    score.add_argument("--master", default=None,
                       help="Spark master URL for --engine spark (default: spark-submit's, else local[*])")
    score.add_argument("--overwrite", action="store_true",
                       help="--engine spark: replace an --output that exists (refused otherwise)")
    score.set_defaults(run=run)
