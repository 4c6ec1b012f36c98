"""Drift and quality monitoring: a current month (or the prediction log) against a reference month.

    python -m ride_duration monitor --reference 2021-01 --current 2024-03 --report-dir reports/2024-03

Both sides are scored by the score job's code with the same model (the bundled file, or
``--model-uri``); a prediction log brings its own served predictions. Drift is judged on the
rides training would use (1-60 minutes, when durations are known), per feature and for the
prediction (:mod:`.drift`); data quality on every row read (:mod:`.checks`); model quality
(RMSE, MAE, bias, n) on the current month's 1-60 minute rides. Writes into ``--report-dir``:
``report.json``, ``report.html`` (+ ``evidently.html``) and ``metrics.prom`` (:mod:`.report`).

Exit codes (:class:`ride_duration.errors.ExitCode`): 0 report written; 1 the model cannot be
loaded, or ``--pushgateway`` cannot be reached (the report is written first); 2 a source cannot
be read (missing, corrupt, a model input column missing or not a number, no rides) or a bad flag;
4 drift detected and ``--fail-on-drift`` given (the report is written first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
import typing as t
import warnings
from pathlib import Path

from ..config import Settings
from ..errors import ExitCode, JobError
from . import checks, cli, sources

if t.TYPE_CHECKING:
    import pandas as pd

    from ..model.predictor import LoadedModel

log = logging.getLogger(__name__)

SEED = 14


def sample(frame: pd.DataFrame, rows: int | None) -> pd.DataFrame:
    """At most ``rows`` rows, drawn with a fixed seed (all of them when ``rows`` is None)."""
    if rows is None or len(frame) <= rows:
        return frame
    return frame.sample(n=rows, random_state=SEED)


def build(reference: str, current: str, model: LoadedModel, data_dir: Path | None = None,
          sample_rows: int | None = None) -> tuple[dict[str, t.Any], t.Any]:
    """The report (as ``report.json`` holds it) and Evidently's snapshot.

    :raises sources.SourceError: a side cannot be read.
    """
    from . import drift

    started = time.perf_counter()
    ref_frame, ref_info = sources.load(reference, model, data_dir)
    cur_frame, cur_info = sources.load(current, model, data_dir)
    ref_rides, cur_rides = checks.analysed(ref_frame), checks.analysed(cur_frame)
    if ref_rides.empty or cur_rides.empty:
        side = "reference" if ref_rides.empty else "current"
        raise sources.SourceError(f"no scorable rides on the {side} side")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's divide-by-zero inside chi-square on empty bins
        warnings.filterwarnings("ignore", message="The inplace keyword")  # Evidently's own pandas 3 deprecation
        columns, snapshot = drift.column_drift(sample(ref_rides, sample_rows), sample(cur_rides, sample_rows))
    prediction = columns.pop(drift.PREDICTION)
    prediction.update(reference_mean=float(ref_rides["prediction"].mean()),
                      current_mean=float(cur_rides["prediction"].mean()))
    now = dt.datetime.now(dt.UTC)
    report = {
        "drift_detected": any(c["drift"] for c in columns.values()) or prediction["drift"],
        "features": columns,
        "prediction": prediction,
        "quality": checks.model_quality(cur_rides),
        "reference_quality": checks.model_quality(ref_rides),
        "data_quality": checks.data_quality(cur_frame, cur_rides),
        "reference_data_quality": checks.data_quality(ref_frame, ref_rides),
        "reference": {**ref_info, "analysed_rows": len(ref_rides)},
        "current": {**cur_info, "analysed_rows": len(cur_rides)},
        "model": {"version": model.version, "source": model.source},
        "evidently": {**snapshot.runtime, "sample_rows": sample_rows, "seed": SEED if sample_rows else None},
        "created_at": now.isoformat(timespec="seconds"),
        "created_at_unix": now.timestamp(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report, snapshot


def write(report: dict[str, t.Any], snapshot: t.Any, directory: Path, pushgateway: str | None = None) -> None:
    """Write the report's files into ``directory``, then push the metrics to ``pushgateway`` if given.

    :raises BadInput: ``directory`` cannot be written.
    :raises JobError: the Pushgateway cannot be reached or refused the push (the files are written).
    """
    write_files(report, snapshot, directory)
    if pushgateway:
        push(report, pushgateway, directory)


def write_files(report: dict[str, t.Any], snapshot: t.Any, directory: Path) -> None:
    from . import report as output

    output.write_dir(directory, [lambda d: output.write_html(report, snapshot, d),
                                 lambda d: output.write_prometheus(report, d),
                                 lambda d: output.write_json(report, d)])


def push(report: dict[str, t.Any], pushgateway: str, directory: Path) -> None:
    from . import report as output

    try:
        output.push(report, pushgateway)
    except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts; ValueError: a malformed address
        raise JobError(f"report written to {directory}, but --pushgateway {pushgateway} failed: {exc}") from None


def run(args: t.Any) -> int:
    """``monitor`` sub-command (exit codes in the module docstring)."""
    settings = Settings()
    model = cli.load_model(args, settings)
    report, snapshot = build(args.reference, args.current, model, cli.data_dir(args, settings), args.sample_rows)
    write_files(report, snapshot, args.report_dir)
    summary = {name: round(r["score"], 4) for name, r in report["features"].items()}
    log.info("drift_detected=%s scores=%s rmse=%s data_quality_passed=%s -> %s", report["drift_detected"],
             summary, (report["quality"] or {}).get("rmse"), report["data_quality"]["passed"], args.report_dir,
             extra={"event": "monitor_done", "drift_detected": report["drift_detected"],
                    "report_dir": str(args.report_dir), "seconds": report["seconds"]})
    if args.pushgateway:
        push(report, args.pushgateway, args.report_dir)
    return ExitCode.DRIFT if args.fail_on_drift and report["drift_detected"] else ExitCode.OK


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``python -m ride_duration monitor``."""
    p = commands.add_parser("monitor", help="drift and quality report: a current month or prediction log vs a "
                                            "reference month",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True,
                   help="reference data: parquet path, URL or YYYY-MM (--data-dir, else the TLC's URL)")
    p.add_argument("--current", required=True,
                   help="current data: parquet path, URL, YYYY-MM, or a prediction log (directory or .jsonl file)")
    p.add_argument("--report-dir", type=Path, required=True, help="where report.json/.html and metrics.prom go")
    cli.add_model_options(p)
    cli.data_dir_option(p)
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {ExitCode.DRIFT} when drift is detected")
    p.add_argument("--sample-rows", type=cli.positive_int, default=None,
                   help=f"compare at most this many rides per side, sampled with seed {SEED} (default: all)")
    p.add_argument("--pushgateway", default=None, help="also push the metrics to this Pushgateway (host:port)")
    p.set_defaults(run=run)
