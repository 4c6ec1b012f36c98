"""Scheduled retraining: monitor the newest month, train a challenger on it, and let the gate decide.

    python -m ride_duration retrain --month 2023-01 [--valid-month 2023-02]

1. the month (``--month YYYY-MM``, or ``latest``: the newest month whose next month is
   available too) and its validation month (``--valid-month``, default the month after)
   are read like ``train.py`` reads them: from ``TLC_DATA_DIR`` when there, else downloaded from
   the TLC (unless ``TLC_DOWNLOAD=false``) (:mod:`.months`);
2. the newest month is monitored against the champion's (``models:/<MODEL_NAME>@<alias>``)
   training data with the champion's predictions (the ``monitor`` job; the summary is logged and,
   with ``--report-dir``, written as report.json/.html and metrics.prom) (:mod:`.champion_drift`);
3. a challenger is fitted on the month and validated on the validation month
   (:func:`ride_duration.jobs.train.fit`, the training job's own fit);
4. it is registered and promoted only through the champion/challenger gate
   (:func:`ride_duration.registry.promote.register_and_gate`): champion and challenger are
   scored on the same validation rides and the alias moves only if the challenger is better.

Promotion on live evidence (``--require-shadow-evidence N [--shadow-evidence report.json]``): the
new challenger has no live evidence yet, so step 4 moves ``@challenger`` instead (if it beats
``@production`` on the validation rides), for the service to shadow (``SHADOW_MODEL_URI``). Before
that, the current ``@challenger`` moves to ``@production`` only if the report of ``evaluate``
compares it with the current ``@production`` on at least N live rides and its live RMSE is lower
(:mod:`ride_duration.registry.shadow_evidence`); the decision and the numbers are tagged on it
(``shadow_evidence.*``).

Exit codes (:class:`ride_duration.errors.ExitCode`; 0 and 3 as ``train.py --register``): 0 promoted
(with --require-shadow-evidence: the challenger, on live evidence); 1 error (no MLFLOW_TRACKING_URI,
registry, download or training failure); 2 no data (a month not published or not found: try later)
or bad input (a month's file unreadable, a column missing or mistyped, a bad flag, a missing,
unreadable or malformed --shadow-evidence report); 3 kept the champion (the challenger was
registered and rejected; with --require-shadow-evidence: the live evidence is missing, too small or
not better).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import typing as t
from pathlib import Path

from ..config import Settings
from ..errors import BadInput, ExitCode, JobError
from ..features import frame_to_rides, prepare_features
from . import cli, live_evidence
from .champion_drift import ChampionNotLoadable, monitor_month
from .months import LATEST, NoData, latest_month, month, next_month, read, source_for

if t.TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def train_and_gate(args: argparse.Namespace, train_src: str, valid_src: str, train_rides: pd.DataFrame,
                   valid_rides: pd.DataFrame, report: dict[str, t.Any] | None) -> int:
    from ..registry import gate, promote
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
    info["metrics"] = gate.metrics(lr.predict(dv.transform(prepare_features(
        frame_to_rides(valid_rides), train.DEFAULT_STEP))), valid_rides)
    if report is not None:
        info["monitor"] = {"drift_detected": report["drift_detected"],
                           "scores": {k: v["score"] for k, v in report["features"].items()},
                           "champion_rmse": (report["quality"] or {}).get("rmse")}
    log.info("challenger validation RMSE %.4f on %d rides of %s", rmse, len(valid_rides), args.valid_month)
    live = args.require_shadow_evidence is not None  # the new candidate goes to @challenger, to be shadowed
    gate_args = argparse.Namespace(model_name=args.model_name, alias=args.challenger_alias if live else args.alias,
                                   against=args.alias if live else None, legacy_stage=False,
                                   experiment=args.experiment)
    return promote.register_and_gate(gate_args, dv, lr, info, valid_rides)


def decide_on_live_evidence(args: argparse.Namespace, settings: Settings, evidence: t.Any) -> int:
    """Promote the current ``@challenger`` to ``@<alias>`` on the report's evidence, or keep (exit 0/3)."""
    from ..registry.client import client_for
    from ..registry.shadow_evidence import decide_challenger

    client = client_for(t.cast(str, settings.mlflow_tracking_uri))
    return decide_challenger(client, args.model_name, args.challenger_alias, args.alias, evidence,
                             live_evidence.source(args), args.require_shadow_evidence)


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
        evidence = live_evidence.read(args)  # inputs first: a bad report fails before months are read
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
    live_code = None
    if args.require_shadow_evidence is not None:
        try:
            live_code = decide_on_live_evidence(args, settings, evidence)
        except Exception as exc:  # noqa: BLE001 - a CLI: one line, exit 1
            log.exception("deciding on the live evidence failed")
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
    trained = f"trained on {args.month}, validated on {args.valid_month}"
    if live_code is None:
        summary(f"{outcome} (challenger {trained})")
        return code
    challenger = {ExitCode.OK: f"is @{args.challenger_alias} now", ExitCode.KEPT_CHAMPION: "rejected by the gate"}
    live = {ExitCode.OK: "promoted", ExitCode.KEPT_CHAMPION: "kept champion"}[live_code]
    summary(f"{live} on live evidence; the new challenger {challenger.get(code, 'failed')} ({trained})")
    return live_code if code in challenger else code


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
    live_evidence.add_options(p, "the current --challenger-alias version to --alias")
    p.add_argument("--challenger-alias", default="challenger",
                   help="with --require-shadow-evidence: the alias the new challenger is gated into, to be shadowed "
                        "(SHADOW_MODEL_URI), and whose version is promoted on live evidence (default challenger)")
    p.set_defaults(run=run)
