"""The sampled prediction log: real gunicorn writes rotated JSON lines per worker, and monitor reads them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ride_duration import create_app
from ride_duration.web.prediction_log import PredictionLog
from tests.conftest import BUNDLED, REFERENCE_RIDE
from tests.support import ROOT, Server, http, post_json

FIELDS = {"time", "request_id", "endpoint", "role", "ride_id", "model_version", "PULocationID", "DOLocationID",
          "trip_distance", "prediction"}


def records(directory: Path) -> list[dict]:
    """Every line of the directory's files; read again when a file rotates between the listing and the read
    (it is renamed to ``.1`` by then: seen once as a FileNotFoundError in a full run)."""
    for _ in range(100):
        try:
            return [json.loads(line) for path in sorted(directory.glob("*.jsonl*"))
                    for line in path.read_text().splitlines()]
        except FileNotFoundError:
            continue
    raise AssertionError(f"{directory}: files kept vanishing between listing and reading")


def counter(text: str, outcome: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ride_duration_prediction_log_records_total" and s.labels.get("outcome") == outcome:
                return s.value
    return 0.0


def test_off_by_default(client, app):
    assert "prediction_log" not in app.extensions
    assert client.post("/predict", json=REFERENCE_RIDE).status_code == 200


def test_sample_rate_zero_logs_nothing(tmp_path):
    app = create_app({"model_path": BUNDLED / "lin_reg.bin", "mlflow_tracking_uri": None,
                      "prediction_log_dir": tmp_path, "prediction_log_sample_rate": 0.0})
    for _ in range(20):
        assert app.test_client().post("/predict", json=REFERENCE_RIDE).status_code == 200
    app.extensions["prediction_log"].stop()
    assert records(tmp_path) == []


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path, app):
    """No writer draining the queue (as if the disk hung): requests still return at once, extras are dropped."""
    sink = PredictionLog(tmp_path, 1.0, 1 << 20, 2, queue_size=2)
    sink.pid = os.getpid()  # pretend the writer runs: nothing drains the queue
    before = REGISTRY.get_sample_value("ride_duration_prediction_log_records_total", {"outcome": "dropped"}) or 0

    def five_requests() -> None:
        with app.test_request_context("/predict"):
            for _ in range(5):
                sink([REFERENCE_RIDE, REFERENCE_RIDE], [1.0, 2.0], "v")

    # a put that waited for room would wait for ever (nothing drains): a liveness bound, not a timing
    caller = threading.Thread(target=five_requests, daemon=True)
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "a request blocked on the full prediction-log queue"
    after = REGISTRY.get_sample_value("ride_duration_prediction_log_records_total", {"outcome": "dropped"})
    assert sink.queue.qsize() == 2
    assert after - before == 6  # 3 requests x 2 rides


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_gunicorn_logs_sampled_predictions_that_monitor_reads(worker_class, tmp_path):
    """Sync workers (a writer thread each) and gevent workers (monkey-patched after the fork) alike."""
    log_dir = tmp_path / "predictions"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = Server(env={"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "PREDICTION_LOG_DIR": str(log_dir),
                         "PREDICTION_LOG_MAX_BYTES": "4096", "PREDICTION_LOG_BACKUPS": "5",
                         "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                         "GUNICORN_CMD_ARGS": f"--worker-class {worker_class}"},
                    workers=2, log_path=tmp_path / "server.log")
    sent = 0
    with server:
        server.wait("/ready")
        for i in range(40):
            ride = {"PULocationID": 1 + i % 20, "DOLocationID": 50, "trip_distance": 1.0 + i}
            status, headers, body = http("POST", server.url + "/predict", json.dumps(ride),
                                         {"Content-Type": "application/json", "X-Request-ID": f"req-{i}"})
            assert status == 200
            sent += 1
        status, _, body = post_json(server.url + "/predict", [REFERENCE_RIDE] * 30)
        assert status == 200
        sent += 30
        status, _, answer = post_json(server.url + "/invocations", {"dataframe_records": [REFERENCE_RIDE]})
        assert status == 200
        sent += 1
        deadline = time.monotonic() + 10
        while len(records(log_dir)) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        scrape = http("GET", server.url + "/metrics")[2].decode()
    assert f"Using worker: {worker_class}" in server.log_text()
    logged = records(log_dir)
    assert len(logged) == sent
    assert all(set(r) == FIELDS for r in logged)
    by_request = {r["request_id"]: r for r in logged}
    assert by_request["req-7"]["PULocationID"] == 8 and by_request["req-7"]["trip_distance"] == 8.0
    assert by_request["req-7"]["endpoint"] == "/predict"
    assert by_request["req-7"]["model_version"].startswith("lin_reg-")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", by_request["req-7"]["time"])
    batch = [r for r in logged if r["endpoint"] == "/predict" and not r["request_id"].startswith("req-")]
    assert len(batch) == 30 and len({r["request_id"] for r in batch}) == 1
    assert batch[0]["prediction"] == body["durations"][0]
    assert [r["prediction"] for r in logged if r["endpoint"] == "/invocations"] == answer["predictions"]
    files = sorted(p.name for p in log_dir.iterdir())
    pids = {re.match(r"predictions-(\d+)\.jsonl", name).group(1) for name in files}
    assert 1 <= len(pids) <= 2 and all(re.fullmatch(r"predictions-\d+\.jsonl(\.[1-5])?", n) for n in files)
    assert any(name.endswith(".jsonl.1") for name in files)  # 4 KiB files: rotated
    assert counter(scrape, "written") == sent and counter(scrape, "dropped") == 0
    if worker_class != "sync":
        return  # reading the log does not depend on how it was written

    report_dir = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "ride_duration", "monitor", "--reference", str(log_dir),
                           "--current", str(log_dir), "--report-dir", str(report_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["current"]["kind"] == "prediction_log"
    assert report["current"]["rows"] == sent and report["current"]["unreadable_lines"] == 0
    assert report["quality"] is None  # a log has no actual durations
    assert report["drift_detected"] is False
