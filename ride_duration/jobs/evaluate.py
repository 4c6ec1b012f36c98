"""Live accuracy per model version: logged predictions (served and shadow) joined with the true durations.

    python -m ride_duration evaluate --predictions /var/log/ride-duration \\
        --predictions kafka://kafka:9092/ride-predictions --actuals actuals.parquet --report-dir reports/live

--predictions (repeatable): a prediction-log directory or .jsonl file, or kafka://HOST:PORT/TOPIC (read
from the beginning to the end offsets at the start; no group join, nothing committed). --actuals: parquet
or CSV with ride_id and actual_duration (minutes), or TLC rows (pickup/drop-off times; ride_id = that
column, else the row index as `score` numbers rows). Duplicated predictions: the latest line per
(ride_id, role, model_version) counts.

Per model version, on the rides with an actual duration inside the training filter (1-60 minutes):
n, RMSE, MAE, bias (mean of prediction - actual) and the RMSE on plausible rides (the rule training
uses, ride_duration.features.plausible); rides without actuals are counted. Per (champion, challenger)
pair of the shadow lines: both versions' RMSE and MAE on the same rides. Writes report.json,
report.html and metrics.prom into --report-dir.

Exit codes (ride_duration.errors.ExitCode):
  0  report written
  1  a broker cannot be reached, or stops delivering before a topic's end (--kafka-timeout); or an
     unexpected failure
  2  bad input: a predictions path or topic that does not exist or holds no usable record with a
     ride_id, --actuals missing/corrupt/empty/mistyped, --report-dir not writable, a bad flag or
     environment variable
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import typing as t
from pathlib import Path

from ..config import Settings, settings_from
from ..errors import ExitCode
from ..stream.cli import key_value
from ..stream.endpoints import kafka_topic
from . import actuals, checks, data, predictions

if t.TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FILTER = f"{data.MIN_MINUTES:g} <= actual_duration <= {data.MAX_MINUTES:g}"
PREFIX = "ride_duration_evaluate"
FLAGS = {"evaluate_group": "--group", "evaluate_kafka_timeout": "--kafka-timeout"}
"""Settings field → the flag that overrides it (validated by the field)."""


def quality(rides: pd.DataFrame) -> dict[str, t.Any]:
    """n, RMSE, MAE, bias and the plausible-ride RMSE of ``rides`` (prediction, actual_duration, trip_distance):
    the monitor's :func:`.checks.model_quality`, null metrics when there is no ride."""
    measured = checks.model_quality(rides) if len(rides) else None
    if measured is None:
        return {"n": 0, "rmse": None, "mae": None, "bias": None, "plausible_n": 0, "plausible_rmse": None}
    return {"n": measured["n"], "rmse": measured["rmse"], "mae": measured["mae"], "bias": measured["bias"],
            "plausible_n": measured["n_plausible"], "plausible_rmse": measured["rmse_plausible"]}


def evaluate(preds: pd.DataFrame, truth: pd.DataFrame) -> dict[str, t.Any]:
    """``rides``, ``versions`` and ``comparisons`` of report.json (see docs/evaluation.md)."""
    frame = preds.merge(truth.rename(columns={"trip_distance": "actual_distance"}), on="ride_id", how="left",
                        validate="many_to_one")
    frame["trip_distance"] = frame["trip_distance"].fillna(frame["actual_distance"])
    frame["in_filter"] = frame["actual_duration"].between(data.MIN_MINUTES, data.MAX_MINUTES)

    rides = frame.drop_duplicates("ride_id")
    with_actuals = rides["actual_duration"].notna()
    summary = {"predicted": len(rides), "with_actuals": int(with_actuals.sum()),
               "without_actuals": int((~with_actuals).sum()),
               "outside_filter": int((with_actuals & ~rides["in_filter"]).sum())}

    # A version that served a ride and also shadowed it (a challenger promoted meanwhile) counts it once: served.
    ordered = frame.assign(served=frame["role"] == predictions.SERVED).sort_values("served", kind="stable")
    once = ordered.drop_duplicates(["ride_id", "model_version"], keep="last")
    roles = frame.groupby("model_version")["role"].unique()
    versions = {}
    for label in sorted(roles.index):
        mine = once.loc[once["model_version"] == label]
        seen = set(roles[label])
        versions[label] = {"role": seen.pop() if len(seen) == 1 else "both",
                           **quality(mine.loc[mine["in_filter"]]),
                           "predicted": len(mine), "without_actuals": int(mine["actual_duration"].isna().sum())}

    shadow = frame.loc[(frame["role"] == predictions.SHADOW) & frame["served_model_version"].notna()
                       & frame["in_filter"]]
    served = frame.loc[frame["role"] == predictions.SERVED, ["ride_id", "model_version", "prediction"]].rename(
        columns={"model_version": "served_model_version", "prediction": "champion_prediction"})
    pairs = shadow.merge(served, on=["ride_id", "served_model_version"], how="inner", validate="many_to_one")
    comparisons = []
    for (champion, challenger), same in pairs.groupby(["served_model_version", "model_version"], sort=True):
        mine, theirs = quality(same), quality(same.assign(prediction=same["champion_prediction"]))
        comparisons.append({"champion": champion, "challenger": challenger, "n": mine["n"],
                            "champion_rmse": theirs["rmse"], "challenger_rmse": mine["rmse"],
                            "champion_mae": theirs["mae"], "challenger_mae": mine["mae"],
                            "champion_bias": theirs["bias"], "challenger_bias": mine["bias"],
                            "plausible_n": mine["plausible_n"], "champion_plausible_rmse": theirs["plausible_rmse"],
                            "challenger_plausible_rmse": mine["plausible_rmse"]})
    return {"rides": summary, "filter": FILTER, "versions": versions, "comparisons": comparisons}


def build(given: t.Sequence[predictions.Source], actuals_path: Path, settings: Settings,
          kafka_config: t.Mapping[str, str] | None = None) -> dict[str, t.Any]:
    """The whole report.json. The actuals and log paths are read before any broker is asked.

    :raises BadInput: an input cannot be used (exit 2).
    :raises JobError: a broker cannot be reached (exit 1).
    """
    truth, truth_info = actuals.read(actuals_path)
    preds, infos, counts = predictions.read_all(given, settings.evaluate_group, settings.evaluate_kafka_timeout,
                                                kafka_config)
    now = dt.datetime.now(dt.UTC)
    return {"generated_at": now.isoformat(timespec="seconds"), "generated_at_unix": now.timestamp(),
            "predictions": [str(source) for source in given], "actuals": str(actuals_path),
            **evaluate(preds, truth),
            "records": counts, "sources": infos, "actuals_file": truth_info}


# ---- the files ------------------------------------------------------------------------------------

def registry_for(report: dict[str, t.Any]) -> t.Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: t.Sequence[str] = ()) -> t.Any:
        return Gauge(f"{PREFIX}_{name}", doc, list(labels), registry=registry)

    rides = gauge("rides", "Rides with a prediction, by whether their actual duration is known.", ["state"])
    for state in ("predicted", "with_actuals", "without_actuals", "outside_filter"):
        rides.labels(state).set(report["rides"][state])
    per = {"rmse_minutes": gauge("rmse_minutes", f"RMSE of a version on its rides with {FILTER}.",
                                 ["model_version", "role"]),
           "mae_minutes": gauge("mae_minutes", "Mean absolute error of a version.", ["model_version", "role"]),
           "bias_minutes": gauge("bias_minutes", "Mean of predicted minus actual minutes.", ["model_version", "role"]),
           "plausible_rmse_minutes": gauge("plausible_rmse_minutes", "RMSE on the plausible rides "
                                           "(features.plausible).", ["model_version", "role"])}
    n = gauge("version_rides", "Rides a version's metrics are measured on.", ["model_version", "role"])
    for label, version in report["versions"].items():
        n.labels(label, version["role"]).set(version["n"])
        for name, key in (("rmse_minutes", "rmse"), ("mae_minutes", "mae"), ("bias_minutes", "bias"),
                          ("plausible_rmse_minutes", "plausible_rmse")):
            if version[key] is not None:
                per[name].labels(label, version["role"]).set(version[key])
    pair_rmse = gauge("comparison_rmse_minutes", "RMSE of the champion and the challenger on the same rides.",
                      ["champion", "challenger", "model"])
    pair_n = gauge("comparison_rides", "Rides both versions of a pair predicted, with actuals.",
                   ["champion", "challenger"])
    for pair in report["comparisons"]:
        pair_n.labels(pair["champion"], pair["challenger"]).set(pair["n"])
        for model in ("champion", "challenger"):
            pair_rmse.labels(pair["champion"], pair["challenger"], model).set(pair[f"{model}_rmse"])
    gauge("last_run_timestamp_seconds", "When this report was made.").set(report["generated_at_unix"])
    return registry


def html_sections(report: dict[str, t.Any]) -> list[str]:
    from .report import fmt, table

    rides = report["rides"]
    version_rows = [(label, v["role"], v["n"], v["rmse"], v["plausible_rmse"], v["plausible_n"], v["mae"], v["bias"],
                     v["without_actuals"]) for label, v in report["versions"].items()]
    pair_rows = [(p["champion"], p["challenger"], p["n"], p["champion_rmse"], p["challenger_rmse"],
                  p["champion_mae"], p["challenger_mae"],
                  "challenger" if p["challenger_rmse"] < p["champion_rmse"] else "champion")
                 for p in report["comparisons"]]
    sources = ", ".join(f"<code>{fmt(s)}</code>" for s in report["predictions"])
    return [
        "<h1>Ride-duration live evaluation</h1>",
        f"<p>Predictions: {sources}; actual durations: <code>{fmt(report['actuals'])}</code>; made "
        f"{fmt(report['generated_at'])}. Metrics on rides with <code>{fmt(report['filter'])}</code>.</p>",
        "<h2>Rides</h2>",
        table("rides-table", ["predicted", "with actuals", "without actuals", "outside the filter"],
              [(rides["predicted"], rides["with_actuals"], rides["without_actuals"], rides["outside_filter"])]),
        "<h2>Per model version</h2>",
        table("versions-table", ["version", "role", "rides", "RMSE", "RMSE (plausible rides)", "plausible rides",
                                 "MAE", "bias (pred - actual)", "without actuals"], version_rows),
        "<h2>Champion and challenger on the same rides</h2>",
        table("comparisons-table", ["champion", "challenger", "rides", "champion RMSE", "challenger RMSE",
                                    "champion MAE", "challenger MAE", "lower RMSE"], pair_rows)
        if pair_rows else "<p>No ride has both a served and a shadow prediction with an actual duration.</p>",
    ]


def write_files(report: dict[str, t.Any], directory: Path) -> None:
    """report.html, metrics.prom, then report.json. :raises BadInput: ``directory`` cannot be written."""
    from . import report as output

    def html_page(target: Path) -> Path:
        path = target / "report.html"
        path.write_text(output.page("Ride-duration live evaluation", html_sections(report)))
        return path

    output.write_dir(directory, [html_page, lambda d: output.write_textfile(registry_for(report), d),
                                 lambda d: output.write_json(report, d)])


# ---- the command ------------------------------------------------------------------------------------

def prediction_source(text: str) -> predictions.Source:
    """argparse type: ``kafka://HOST:PORT/TOPIC`` (checked as ``stream`` checks it) or a path."""
    if text.startswith("kafka:"):
        try:
            return kafka_topic(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def run(args: argparse.Namespace) -> int:
    """``evaluate`` sub-command (exit codes in the module docstring)."""
    settings = settings_from({field: (flag, getattr(args, field.removeprefix("evaluate_")))
                              for field, flag in FLAGS.items()})
    report = build(args.predictions, args.actuals, settings, dict(args.kafka_config or []))
    write_files(report, args.report_dir)
    summary = {label: v["rmse"] and round(v["rmse"], 4) for label, v in report["versions"].items()}
    log.info("rides=%s with_actuals=%s rmse=%s comparisons=%d -> %s", report["rides"]["predicted"],
             report["rides"]["with_actuals"], summary, len(report["comparisons"]), args.report_dir,
             extra={"event": "evaluate_done", "report_dir": str(args.report_dir), **report["rides"]})
    return ExitCode.OK


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``python -m ride_duration evaluate``."""
    defaults = Settings.model_fields
    p = commands.add_parser("evaluate", help="live accuracy per model version: logged predictions (served and "
                                             "shadow) joined with actual durations",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", type=prediction_source, action="append", required=True,
                   metavar="DIR|kafka://HOST:PORT/TOPIC",
                   help="a prediction-log directory (or .jsonl file) or a Kafka predictions topic; repeatable")
    p.add_argument("--actuals", type=Path, required=True,
                   help="parquet or CSV: ride_id + actual_duration (minutes), or TLC rows with pickup/drop-off times")
    p.add_argument("--report-dir", type=Path, required=True, help="where report.json/.html and metrics.prom go")
    p.add_argument("--group", default=None,
                   help=f"Kafka group.id for reading topics (EVALUATE_GROUP, default "
                        f"{defaults['evaluate_group'].default}; never joined, nothing committed)")
    p.add_argument("--kafka-timeout", dest="kafka_timeout", type=float, default=None,
                   help=f"seconds to wait for a broker or a topic's next message before exit 1 "
                        f"(EVALUATE_KAFKA_TIMEOUT, default {defaults['evaluate_kafka_timeout'].default:g})")
    p.add_argument("--kafka-config", type=key_value, action="append", metavar="KEY=VALUE",
                   help="extra librdkafka setting (repeatable), e.g. security.protocol=SASL_SSL")
    p.set_defaults(run=run)
