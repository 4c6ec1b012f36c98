"""``retrain``'s first step: the new month monitored against the champion's training data.

The champion is ``models:/<MODEL_NAME>@<alias>``; its training data is its run's ``train_data``
param (a local file, a URL, or the same file name in ``TLC_DATA_DIR`` when it was trained
elsewhere). The ``monitor`` job's report is logged and, with ``--report-dir``, written as
report.json/.html and metrics.prom. No champion (or no training data): monitoring is skipped.
"""

from __future__ import annotations

import argparse
import logging
import typing as t
from pathlib import Path

from ..config import Settings
from ..errors import JobError
from . import cli

log = logging.getLogger(__name__)


class ChampionNotLoadable(JobError):
    """The champion the month is monitored with cannot be loaded (exit 1)."""


def champion_training_data(settings: Settings, name: str, alias: str) -> str | None:
    """Where the champion's training data is (its run's ``train_data`` param), or None without a champion."""
    from ..registry.aliases import champion_version
    from ..registry.client import client_for

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
