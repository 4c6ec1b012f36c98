"""Scheduled retraining: monitor the newest month, train a challenger on it, and let the gate decide.

    python -m ride_duration retrain --month 2023-01 [--valid-month 2023-02]

1. the month (``--month YYYY-MM``, or ``latest``: the newest month whose next month is
   available too) and its validation month (``--valid-month``, default the month after)
   are read like ``train.py`` reads them: from ``TLC_DATA_DIR`` when there, else downloaded from
   the TLC (unless ``TLC_DOWNLOAD=false``);
2. the newest month is monitored against the champion's (``models:/<MODEL_NAME>@<alias>``)
   training data with the champion's predictions (the ``monitor`` job; the summary is logged and,
   with ``--report-dir``, written as report.json/.html and metrics.prom);
3. a challenger is fitted on the month and validated on the validation month
   (:func:`ride_duration.jobs.train.fit`, the training job's own fit);
4. it is registered and promoted only through the champion/challenger gate
   (:func:`ride_duration.registry.promote.register_and_gate`): champion and challenger are
   scored on the same validation rides and the alias moves only if the challenger is better.

Exit codes (:class:`ride_duration.errors.ExitCode`; 0 and 3 as ``train.py --register``): 0 promoted;
1 error (no MLFLOW_TRACKING_URI, registry, download or training failure); 2 no data (a month not
published or not found: try later) or bad input (a month's file unreadable, a column missing or
mistyped, a bad flag); 3 kept the champion (the challenger was registered and rejected).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

from ..config import Settings
from ..errors import BadInput, ExitCode, JobError
from . import cli, data

if t.TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)



class NoData(BadInput):
    """The month's file is not there (not yet published, or not in ``TLC_DATA_DIR`` offline)."""


class ChampionNotLoadable(JobError):
    """The champion the month is monitored with cannot be loaded (exit 1)."""


LATEST = "latest"
LOOKBACK_MONTHS = 18
"""How far back ``--month latest`` looks for published months (the TLC publishes ~2 months late)."""


def month(text: str) -> str:
    """argparse type: ``YYYY-MM`` or ``latest``."""
    if text == LATEST:
        return text
    try:
        dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError("must be YYYY-MM") from None
    return text


def next_month(value: str) -> str:
    year, mon = map(int, value.split("-"))
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


def previous_month(value: str) -> str:
    year, mon = map(int, value.split("-"))
    return f"{year - (mon == 1)}-{(mon - 2) % 12 + 1:02d}"


def latest_month(settings: Settings, today: dt.date | None = None) -> str:
    """The newest month whose next month is available too (so it can be validated).

    Candidates: the months of the files in ``TLC_DATA_DIR`` and, when downloads are on, the
    last :data:`LOOKBACK_MONTHS` months at the TLC.

    :raises NoData: no such pair.
    """
    candidates = {p.stem.rsplit("_", 1)[-1] for p in Path(settings.tlc_data_dir).glob("green_tripdata_*.parquet")}
    if settings.tlc_download:
        current = (today or dt.date.today()).strftime("%Y-%m")
        for _ in range(LOOKBACK_MONTHS):
            current = previous_month(current)
            candidates.add(current)
    available: dict[str, bool] = {}

    def has(value: str) -> bool:
        if value not in available:
            try:
                source_for(value, settings)
                available[value] = True
            except NoData:
                available[value] = False
        return available[value]

    for candidate in sorted((c for c in candidates if len(c) == 7), reverse=True):
        if has(next_month(candidate)) and has(candidate):
            return candidate
    raise NoData(f"no month with its next month in {settings.tlc_data_dir}"
                 + (f" or at the TLC (last {LOOKBACK_MONTHS} months)" if settings.tlc_download else ""))


def source_for(value: str, settings: Settings) -> str:
    """The local file or the TLC URL for a month.

    :raises NoData: not local and downloads are off, or the TLC answers 403/404 (not published).
    """
    source = data.resolve_source(value, settings.tlc_data_dir)
    if not source.startswith(("http://", "https://")):
        return source
    if not settings.tlc_download:
        raise NoData(f"{value}: not in {settings.tlc_data_dir} and TLC_DOWNLOAD is false")
    try:
        with urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=30):  # noqa: S310 - http(s) only, checked above
            return source
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):  # CloudFront answers 403 for a file that does not exist
            raise NoData(f"{value}: {source} answered {exc.code} (not published yet?)") from exc
        raise


def read(source: str) -> pd.DataFrame:
    rides = data.read_rides(source)
    if rides.empty:
        raise NoData(f"{source}: no 1-60 minute rides")
    return rides


def champion_training_data(settings: Settings, name: str, alias: str) -> str | None:
    """Where the champion's training data is (its run's ``train_data`` param), or None without a champion."""
    from ..registry.client import client_for
    from ..registry.promote import champion_version

    client = client_for(t.cast(str, settings.mlflow_tracking_uri))
    version = champion_version(client, name, alias)
    if version is None:
        return None
    run_id = client.get_model_version(name, version).run_id
    source = client.get_run(run_id).data.params.get("train_data") if run_id else None
    if not source:
        return None
    if Path(source).is_file() or source.startswith(("http://", "https://")):
        return source
    local = settings.tlc_data_dir / Path(source).name  # trained elsewhere (another container): same file here?
    return str(local) if local.is_file() else None


def monitor_month(args: argparse.Namespace, settings: Settings, name: str, current: str) -> dict[str, t.Any] | None:
    """The monitor report of ``current`` against the champion's training data (None if there is no champion)."""
    from . import monitor

    reference = champion_training_data(settings, name, args.alias)
    if reference is None:
        log.info("no champion (or its training data) to compare with: monitoring skipped",
                 extra={"event": "retrain_monitor_skipped"})
        return None
    try:
        model = cli.load_model(args, settings, model_uri=f"models:/{name}@{args.alias}")
    except JobError as exc:
        raise ChampionNotLoadable(str(exc)) from None
    report, snapshot = monitor.build(reference, current, model, settings.tlc_data_dir, args.sample_rows)
    if args.report_dir is not None:
        monitor.write(report, snapshot, args.report_dir, args.pushgateway)
    log.info("monitor: drift_detected=%s champion RMSE on %s: %s", report["drift_detected"], args.month,
             (report["quality"] or {}).get("rmse"),
             extra={"event": "retrain_monitored", "drift_detected": report["drift_detected"],
                    "scores": {k: v["score"] for k, v in report["features"].items()},
                    "champion_rmse": (report["quality"] or {}).get("rmse")})
    return report


def train_and_gate(args: argparse.Namespace, train_src: str, valid_src: str, train_rides: pd.DataFrame,
                   valid_rides: pd.DataFrame, report: dict[str, t.Any] | None) -> int:
    from ..registry import promote
    from . import train

    dv, lr, rmse = train.fit(train_rides, valid_rides)
    info = {
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "train_data": train.describe_source(train_src, len(train_rides)),
        "valid_data": train.describe_source(valid_src, len(valid_rides)),
        "metrics": {"valid_rmse": rmse},
        "params": {**train.model_params(train.DEFAULT_STEP, train.DEFAULT_ALPHA), "trigger": "retrain"},
        "feature_step": train.DEFAULT_STEP.to_dict(),  # the logged pipeline must apply the step fit() used
    }
    info["metrics"] = promote.metrics(lr.predict(dv.transform(train.prepare_features(
        valid_rides.to_dict("records"), train.DEFAULT_STEP))), valid_rides)
    if report is not None:
        info["monitor"] = {"drift_detected": report["drift_detected"],
                           "scores": {k: v["score"] for k, v in report["features"].items()},
                           "champion_rmse": (report["quality"] or {}).get("rmse")}
    log.info("challenger validation RMSE %.4f on %d rides of %s", rmse, len(valid_rides), args.valid_month)
    gate_args = argparse.Namespace(model_name=args.model_name, alias=args.alias, legacy_stage=False,
                                   experiment=args.experiment)
    return promote.register_and_gate(gate_args, dv, lr, info, valid_rides)


def summary(text: str) -> None:
    print(f"retrain: {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    """``retrain`` sub-command (exit codes in the module docstring)."""
    settings = Settings()
    name = args.model_name or settings.model_name
    args.model_name = name
    if not settings.mlflow_tracking_uri:
        summary("error: needs MLFLOW_TRACKING_URI (the tracking server's URL)")
        return ExitCode.ERROR
    from ..registry.client import bound_http

    bound_http(timeout=60, max_retries=3)  # as the gate: a registry that is down fails in minutes, not hangs
    try:
        if args.month == LATEST:
            args.month = latest_month(settings)
            log.info("latest month with a validation month after it: %s", args.month)
        args.valid_month = args.valid_month or next_month(args.month)
        train_src, valid_src = source_for(args.month, settings), source_for(args.valid_month, settings)
        train_rides, valid_rides = read(train_src), read(valid_src)
    except NoData as exc:
        summary(f"no data: {exc}")
        return ExitCode.BAD_INPUT
    except BadInput as exc:
        summary(f"bad input: {exc}")
        return ExitCode.BAD_INPUT
    except JobError as exc:
        summary(f"error: {exc}")
        return ExitCode.ERROR
    except Exception as exc:  # noqa: BLE001 - a CLI: one line, exit 1
        log.exception("reading the months failed")
        summary(f"error: {type(exc).__name__}: {str(exc)[:500]}")
        return ExitCode.ERROR
    try:
        report = monitor_month(args, settings, name, train_src)
    except ChampionNotLoadable as exc:
        summary(f"error: cannot load the champion: {exc}")
        return ExitCode.ERROR
    except Exception as exc:  # noqa: BLE001 - monitoring informs the run; the gate still decides
        log.exception("monitoring failed; training anyway")
        report = None
        summary(f"monitoring failed ({type(exc).__name__}: {str(exc)[:200]}); training anyway")
    try:
        code = train_and_gate(args, train_src, valid_src, train_rides, valid_rides, report)
    except Exception as exc:  # noqa: BLE001 - fit failed (the gate reports its own errors)
        log.exception("training failed")
        summary(f"error: {type(exc).__name__}: {str(exc)[:500]}")
        return ExitCode.ERROR
    outcome = {ExitCode.OK: "promoted", ExitCode.KEPT_CHAMPION: "kept champion"}.get(code, "error")
    summary(f"{outcome} (challenger trained on {args.month}, validated on {args.valid_month})")
    return code


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``python -m ride_duration retrain``."""
    p = commands.add_parser("retrain", help="monitor a new month, train a challenger on it, promote it via the gate",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--month", type=month, required=True,
                   help="month to train the challenger on (YYYY-MM), or 'latest': the newest month whose next "
                        "month is published too (what a schedule runs)")
    p.add_argument("--valid-month", type=month, default=None,
                   help="month to validate on, champion and challenger alike (default: the month after)")
    p.add_argument("--model-name", default=None, help="registered model name (default: MODEL_NAME)")
    p.add_argument("--alias", default="production", help="alias the gate moves (default production)")
    p.add_argument("--experiment", default="nyc-taxi-ride-duration", help="MLflow experiment name")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="write the monitor's report.json/.html and metrics.prom here (default: log only)")
    p.add_argument("--pushgateway", default=None, help="push the monitor's metrics to this Pushgateway")
    p.add_argument("--sample-rows", type=cli.positive_int, default=None,
                   help="monitor at most this many rides per side")
    p.set_defaults(run=run)
