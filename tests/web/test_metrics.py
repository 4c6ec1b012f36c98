"""/metrics: in-process behaviour, and aggregation across real gunicorn workers (multiprocess mode)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from ride_duration.startup import get_holder
from tests.conftest import REFERENCE_RIDE
from tests.support import Server, http, post_json, wait_until

PREDICT_OK = {"endpoint": "/predict", "status": "200"}


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in an exposition text (None if absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return None


def delta(name: str, labels: dict[str, str] | None = None):
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    return lambda: (REGISTRY.get_sample_value(name, labels) or 0.0) - before


def test_metrics_endpoint_serves_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for name in ("ride_duration_http_requests_total", "ride_duration_http_request_duration_seconds",
                 "ride_duration_rides_predicted_total", "ride_duration_batch_size_rides", "ride_duration_model_info",
                 "ride_duration_model_events_total"):
        assert f"# HELP {name} " in text


def test_requests_counted_by_route_rule_not_raw_path(client):
    predicted = delta("ride_duration_http_requests_total", PREDICT_OK)
    rides = delta("ride_duration_rides_predicted_total")
    batches = delta("ride_duration_batch_size_rides_count")
    unmatched = delta("ride_duration_http_requests_total", {"endpoint": "unmatched", "status": "404"})
    invalid = delta("ride_duration_http_requests_total", {"endpoint": "/predict", "status": "422"})

    assert client.post("/predict", json=REFERENCE_RIDE).status_code == 200
    assert client.post("/predict", json=[REFERENCE_RIDE] * 3).status_code == 200
    assert client.post("/predict", json={"PULocationID": "x"}).status_code == 422
    for path in ("/nope/1", "/nope/2", "/predict/extra"):
        assert client.get(path).status_code == 404

    assert (predicted(), rides(), batches(), unmatched(), invalid()) == (2, 4, 2, 3, 1)


def test_model_events_and_registry_checks_reach_metrics(app):
    holder = get_holder(app)
    rejected = delta("ride_duration_model_events_total", {"event": "model_rejected"})
    failed_checks = delta("ride_duration_registry_checks_total", {"ok": "false"})

    holder.emit("model_rejected", reason="self-test failed")
    holder.emit("registry_checked", ok=False)

    assert (rejected(), failed_checks()) == (1, 1)
    last = REGISTRY.get_sample_value("ride_duration_registry_last_check_timestamp_seconds", {"ok": "false"})
    assert last == holder.events["registry_checked"]["at"]


def test_model_info_follows_the_serving_model(app):
    holder = get_holder(app)
    old = holder.current
    labels = {"name": old.info["name"], "version": old.version, "source": old.source}
    assert REGISTRY.get_sample_value("ride_duration_model_info", labels) == 1
    swapped = type(old)(old.dv, old.regressor, "v-test-swap", "registry", dict(old.info), old.fast)

    holder.swap(swapped, event="model_swapped")

    assert REGISTRY.get_sample_value("ride_duration_model_info", labels) == 0
    assert REGISTRY.get_sample_value("ride_duration_model_info", {**labels, "version": "v-test-swap",
                                                                  "source": "registry"}) == 1


# ---- real gunicorn, 2 workers, PROMETHEUS_MULTIPROC_DIR ------------------------------------------------

def stale_counter(directory: Path, value: float) -> None:
    """A counter file left by an earlier run: the master must wipe it before it counts."""
    names = ["endpoint", "status"]
    d = MmapedDict(str(directory / "counter_4242424.db"))
    d.write_value(mmap_key("ride_duration_http_requests", "ride_duration_http_requests_total", names,
                           ["/predict", "200"], "stale"), value, 0.0)
    d.close()


def requests_by_pid(directory: Path) -> dict[int | str, float]:
    """Successful /predict requests per process, read from each process's counter file."""
    counts: dict[int | str, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = path.stem.split("_")[1]
        pid = int(pid) if pid.isdigit() else pid
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == "ride_duration_http_requests_total" and labels == PREDICT_OK:
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


def settled_snapshot(server: Server, metrics_dir: Path) -> tuple[set[int], set[str]] | None:
    """The master's and live workers' PIDs and the metric file names, read consistently, or None.

    The last scrape can itself recycle a worker: the master then reaps it, archives its files and
    boots a replacement, asynchronously. A listing is only comparable with the PIDs when no worker
    was reaped or booted while it was taken and both workers are up."""
    before = server.worker_pids()
    files = {p.name for p in metrics_dir.glob("*.db")}
    if len(before) == 2 and server.worker_pids() == before:
        return {server.proc.pid, *before}, files
    return None


@pytest.fixture
def served(tmp_path: Path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    stale_counter(metrics_dir, 1000.0)
    server = Server(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, workers=2, log_path=tmp_path / "out.log")
    with server:
        yield server, metrics_dir


def test_counters_sum_across_workers_and_survive_a_killed_worker(served):
    server, metrics_dir = served
    url = server.url + "/predict"
    n, rides, errors = 0, 0, []

    def post(sizes: list[int]) -> None:  # fresh connections, concurrently: both workers accept
        for size in sizes:
            status = post_json(url, REFERENCE_RIDE if size == 1 else [REFERENCE_RIDE] * size)[0]
            if status != 200:
                errors.append(status)

    # gevent workers do not balance accepts: one round may land on one worker, which would prove
    # nothing about summing. Rounds of 15 requests (30 rides) until both workers have answered.
    def answered() -> set[int | str]:  # live workers that counted a request (not the stale file)
        return {pid for pid, c in requests_by_pid(metrics_dir).items() if c > 0} & server.worker_pids()

    rounds = 0
    while rounds < 10 and (rounds == 0 or len(answered()) < 2):
        threads = [threading.Thread(target=post, args=([1 + (i + k) % 3 for i in range(5)],)) for k in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert errors == []
        rounds += 1
        n += 15
        rides += sum(1 + (i + k) % 3 for k in range(3) for i in range(5))
    for path in ("/nope/a", "/nope/b?token=1"):
        assert http("GET", server.url + path)[0] == 404

    status, _, raw = http("GET", server.url + "/metrics")
    text = raw.decode()
    assert status == 200
    per_pid = requests_by_pid(metrics_dir)
    assert len(answered()) == 2, f"{rounds} rounds, all on one worker: {per_pid}"
    assert sample(text, "ride_duration_http_requests_total", PREDICT_OK) == n  # the stale 1000 was wiped
    assert sample(text, "ride_duration_http_request_duration_seconds_count", PREDICT_OK) == n
    assert sample(text, "ride_duration_http_requests_total", {"endpoint": "unmatched", "status": "404"}) == 2
    assert sample(text, "ride_duration_rides_predicted_total") == rides
    assert sample(text, "ride_duration_batch_size_rides_count") == n
    # loaded once, in the master before the fork: its counter file survives, its live gauge does not
    assert sample(text, "ride_duration_model_events_total", {"event": "model_loaded"}) == 1
    assert sample(text, "ride_duration_model_info") == 1
    assert not list(metrics_dir.glob(f"gauge_livemax_{server.proc.pid}.db"))

    workers = server.worker_pids()
    victim = max(per_pid, key=per_pid.get)
    assert victim in workers
    os.kill(victim, signal.SIGKILL)
    # the master boots the replacement only after child_exit has retired the victim's files
    wait_until(lambda: victim not in (live := server.worker_pids()) and len(live) == 2, 20,
               f"worker {victim} reaped and replaced")
    server.wait("/health")

    status, _, raw = http("GET", server.url + "/metrics")
    text = raw.decode()
    assert status == 200
    assert sample(text, "ride_duration_http_requests_total", PREDICT_OK) == n  # the dead worker's count stays
    assert sample(text, "ride_duration_rides_predicted_total") == rides
    assert sample(text, "ride_duration_model_info") == 1  # the replacement published its own
    # child_exit: live gauges deleted, counters and histograms folded into the archive files
    assert not list(metrics_dir.glob(f"*_{victim}.db"))
    assert requests_by_pid(metrics_dir).get(victim) is None and (metrics_dir / "counter_archive.db").exists()


def test_recycled_workers_keep_totals_without_piling_up_files(tmp_path: Path):
    """max_requests recycling while scraping: totals monotonic and exact, every scrape 200,
    and the directory holds only live workers' files plus the two archive files."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    server = Server(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                         "GUNICORN_CMD_ARGS": "--max-requests 10 --max-requests-jitter 0"},
                    workers=2, log_path=tmp_path / "out.log")
    n, seen, failures = 120, [], []
    stop = threading.Event()

    def scrape_until_stopped() -> None:
        while not stop.is_set():
            status, _, raw = http("GET", server.url + "/metrics")
            if status != 200:
                failures.append(status)
            else:
                seen.append(sample(raw.decode(), "ride_duration_http_requests_total", PREDICT_OK) or 0.0)

    with server:
        scraper = threading.Thread(target=scrape_until_stopped)
        scraper.start()
        try:
            for _ in range(n):
                assert post_json(server.url + "/predict", REFERENCE_RIDE)[0] == 200
        finally:
            stop.set()
            scraper.join()
        final = sample(http("GET", server.url + "/metrics")[2].decode(), "ride_duration_http_requests_total",
                       PREDICT_OK)
        pids, files = wait_until(lambda: settled_snapshot(server, metrics_dir), 30,
                                 "two live workers and no worker exit while listing the metric files")

    assert server.log_text().count("Booting worker") >= 2 + n // 10  # workers really were recycled
    assert failures == []
    assert seen == sorted(seen) and final == n
    assert files <= {f"{kind}_{pid}.db" for kind in ("counter", "histogram", "gauge_livemax") for pid in pids} | {
        "counter_archive.db", "histogram_archive.db"}
