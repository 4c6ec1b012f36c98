"""Report files: ``report.json``, ``report.html``, ``metrics.prom`` (``monitor``'s, and the pieces ``evaluate`` shares).

:func:`write_dir` writes a job's files into its ``--report-dir`` (``report.json`` last, so its presence
means the set is complete; a directory that cannot be written is bad input, exit 2); :func:`write_json`,
:func:`write_textfile`, :func:`page`, :func:`table` and :func:`fmt` are the pieces every report uses.
The rest is ``monitor``'s: ``report.html`` with Evidently's page beside it, and its metrics.

``metrics.prom`` is in the Prometheus text format for node_exporter's textfile collector
(``--collector.textfile.directory``); the same registry can be pushed to a Pushgateway.
Metric names (``feature`` is ``PULocationID``, ``DOLocationID``, ``trip_distance`` or ``prediction``):

* ``ride_duration_monitor_drift_score{feature,method}``, ``..._drift_threshold{feature}``,
  ``..._drift_detected{feature}`` (0/1) and ``..._dataset_drift_detected`` (0/1);
* ``ride_duration_monitor_rmse_minutes``, ``..._mae_minutes``, ``..._bias_minutes``, ``..._rides``
  (absent without actual durations);
* ``ride_duration_monitor_data_quality_value{rule}``, ``..._data_quality_failed{rule}`` (0/1);
* ``ride_duration_monitor_last_run_timestamp_seconds``, ``ride_duration_monitor_info{model_version,current}``.
"""

from __future__ import annotations

import html
import json
import time
import typing as t
from pathlib import Path

from ..errors import BadInput

PREFIX = "ride_duration_monitor"
EVIDENTLY_PAGE = "evidently.html"


def write_dir(directory: Path, writers: t.Sequence[t.Callable[[Path], Path]]) -> None:
    """Create ``directory`` and run each writer on it (put ``write_json`` last).

    :raises BadInput: ``directory`` cannot be written (names ``--report-dir``).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for write in writers:
            write(directory)
    except OSError as exc:
        raise BadInput(f"cannot write the report into --report-dir {directory}: {exc}") from None


def write_json(report: dict[str, t.Any], directory: Path) -> Path:
    path = directory / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def registry_for(report: dict[str, t.Any]) -> t.Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: t.Sequence[str] = ()) -> t.Any:
        return Gauge(f"{PREFIX}_{name}", doc, list(labels), registry=registry)

    score = gauge("drift_score", "Drift score of a feature or the prediction (see method).", ["feature", "method"])
    threshold = gauge("drift_threshold", "Threshold the drift score is compared with.", ["feature"])
    detected = gauge("drift_detected", "1 when the feature (or prediction) drifted.", ["feature"])
    for name, result in {**report["features"], "prediction": report["prediction"]}.items():
        score.labels(name, result["method"]).set(result["score"])
        threshold.labels(name).set(result["threshold"])
        detected.labels(name).set(int(result["drift"]))
    gauge("dataset_drift_detected", "1 when any feature or the prediction drifted.").set(int(report["drift_detected"]))
    quality = report.get("quality")
    if quality:
        gauge("rmse_minutes", "RMSE of the model on the current 1-60 minute rides.").set(quality["rmse"])
        gauge("mae_minutes", "Mean absolute error on the current 1-60 minute rides.").set(quality["mae"])
        gauge("bias_minutes", "Mean of predicted minus actual minutes.").set(quality["bias"])
        gauge("rides", "Rides the quality was measured on.").set(quality["n"])
        if quality.get("rmse_plausible") is not None:
            gauge("rmse_plausible_minutes", "RMSE on the current plausible rides (0 < distance <= 60 miles, "
                  "under 80 mph).").set(quality["rmse_plausible"])
    value = gauge("data_quality_value", "Measured value of a data-quality rule.", ["rule"])
    failed = gauge("data_quality_failed", "1 when the data-quality rule failed.", ["rule"])
    for item in report["data_quality"]["rules"]:
        value.labels(item["name"]).set(item["value"])
        failed.labels(item["name"]).set(int(item["failed"]))
    gauge("last_run_timestamp_seconds", "When this report was made.").set(report.get("created_at_unix", time.time()))
    gauge("info", "The model and the current data of the last report.", ["model_version", "current"]).labels(
        report["model"]["version"], report["current"]["source"]).set(1)
    return registry


def write_textfile(registry: t.Any, directory: Path) -> Path:
    """``metrics.prom`` from a prometheus_client registry (written atomically, as the textfile collector needs)."""
    from prometheus_client import write_to_textfile

    path = directory / "metrics.prom"
    write_to_textfile(str(path), registry)
    return path


def write_prometheus(report: dict[str, t.Any], directory: Path) -> Path:
    """``monitor``'s ``metrics.prom``."""
    return write_textfile(registry_for(report), directory)


def push(report: dict[str, t.Any], pushgateway: str) -> None:
    """The same metrics to a Pushgateway (``host:port`` or a URL), job ``ride_duration_monitor``.

    :raises OSError: unreachable, timed out (10 s) or an HTTP error answer.
    """
    from prometheus_client import push_to_gateway

    push_to_gateway(pushgateway, job="ride_duration_monitor", registry=registry_for(report), timeout=10)


def fmt(value: t.Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def table(table_id: str, headers: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]],
          flag: t.Callable[[t.Sequence[t.Any]], bool] = lambda row: False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr class=\"{'alert' if flag(row) else 'ok'}\">" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>"
        for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;
margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}th{background:#f3f3f3}
tr.alert td{background:#fde2e1}.verdict{font-size:1.3em;padding:0.4em 0.8em;display:inline-block}
.drift{background:#fde2e1}.nodrift{background:#e3f6e3}iframe{width:100%;height:1400px;border:1px solid #ccc}"""


def write_html(report: dict[str, t.Any], snapshot: t.Any, directory: Path) -> Path:
    """``report.html``: a summary a person reads first, then Evidently's own page in a frame."""
    snapshot.save_html(str(directory / EVIDENTLY_PAGE))
    drifted = report["drift_detected"]
    verdict = "Drift detected" if drifted else "No drift detected"
    drift_rows = [(name, r["method"], r["score"], r["threshold"], r["drift"])
                  for name, r in {**report["features"], "prediction": report["prediction"]}.items()]
    quality = report.get("quality")
    reference_quality = report.get("reference_quality")
    quality_rows = [(label, q["rmse"], q.get("rmse_plausible"), q["mae"], q["bias"], q["n"])
                    for label, q in (("current", quality), ("reference", reference_quality)) if q]
    dq = report["data_quality"]
    dq_rows = [(r["name"], r["value"], r["threshold"], r["failed"], r["description"]) for r in dq["rules"]]
    sections = [
        "<h1>Ride-duration monitoring report</h1>",
        f'<p class="verdict {"drift" if drifted else "nodrift"}" id="verdict">{verdict}</p>',
        f"<p>Reference: <code>{fmt(report['reference']['source'])}</code> ({report['reference']['analysed_rows']} "
        f"rides); current: <code>{fmt(report['current']['source'])}</code> ({report['current']['analysed_rows']} "
        f"rides); model <code>{fmt(report['model']['version'])}</code>; made {fmt(report['created_at'])}.</p>",
        "<h2>Drift per feature</h2>",
        table("drift-table", ["column", "method", "score", "threshold", "drift"], drift_rows, lambda r: bool(r[4])),
        "<h2>Model quality (1-60 minute rides)</h2>",
        table("quality-table", ["data", "RMSE", "RMSE (plausible rides)", "MAE", "bias (pred - actual)", "rides"],
              quality_rows)
        if quality_rows else "<p>No actual durations in the current data: quality not measured.</p>",
        f"<h2>Data quality: {'passed' if dq['passed'] else 'FAILED'}</h2>",
        table("data-quality-table", ["rule", "value", "threshold", "failed", "what"], dq_rows, lambda r: bool(r[3])),
        f"<h2>Evidently report</h2><p><a href=\"{EVIDENTLY_PAGE}\">Open it on its own page</a>.</p>",
        f'<iframe src="{EVIDENTLY_PAGE}" title="Evidently report"></iframe>',
    ]
    path = directory / "report.html"
    path.write_text(page(f"{verdict}: ride-duration monitoring", sections))
    return path


def page(title: str, sections: t.Iterable[str]) -> str:
    """A self-contained HTML page (the reports' style, no external resource) of ``sections``."""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
