"""Correct by default: with no PROMETHEUS_MULTIPROC_DIR at all, /metrics of a 2-worker gunicorn adds up.

gunicorn.conf.py creates a private directory for the master (and sets the variable) before the
app is preloaded, and removes it when the master exits.
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_RIDE
from tests.support import Server, http, post_json
from tests.web.test_metrics import PREDICT_OK, sample

pytestmark = pytest.mark.timeout(300)  # a hang guard (servers start slowly on a loaded box)


def test_two_workers_without_metrics_env_count_exactly_50_rides(tmp_path: Path) -> None:
    # "" is how the variable is unset for the child (Server inherits this process's environment)
    server = Server(env={"PROMETHEUS_MULTIPROC_DIR": "", "MLFLOW_TRACKING_URI": ""}, workers=2,
                    log_path=tmp_path / "gunicorn.log")
    with server:
        server.wait("/ready")
        assert server.proc is not None
        private = list(Path(tempfile.gettempdir()).glob(f"ride-duration-metrics-{server.proc.pid}-*"))
        assert len(private) == 1, "no private metrics directory for this master"

        def total() -> float:
            return sample(http("GET", server.url + "/metrics")[2].decode(), "ride_duration_rides_predicted_total") or 0

        before = total()
        errors: list[int] = []

        def post(n: int) -> None:  # concurrent, fresh connections: both workers answer
            for _ in range(n):
                status = post_json(server.url + "/predict", REFERENCE_RIDE)[0]
                if status != 200:
                    errors.append(status)

        def predict_pids() -> set[int]:
            access = [json.loads(line) for line in server.log_text().splitlines() if '"event":"request"' in line]
            return {r["pid"] for r in access if r["path"] == "/predict"}

        # gevent workers do not balance accepts: a round of 50 may land on one worker, which would
        # prove nothing about merging. Rounds of exactly 50 rides until both workers have answered.
        rounds = 0
        while rounds < 10 and (rounds == 0 or len(predict_pids()) < 2):
            threads = [threading.Thread(target=post, args=(10,)) for _ in range(5)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            rounds += 1
            assert errors == []
            scrapes = [total() for _ in range(10)]  # whichever worker answers the scrape
            assert scrapes == [before + 50 * rounds] * 10, (rounds, scrapes)
        by_request = sample(http("GET", server.url + "/metrics")[2].decode(), "ride_duration_http_requests_total",
                            PREDICT_OK)
        pids = predict_pids()
    assert len(pids) == 2, f"after {rounds} rounds of 50 rides one worker answered all ({pids}): nothing proved"
    assert by_request == 50 * rounds
    assert not private[0].exists(), "the private metrics directory outlived the master"
