"""Logs: JSON lines on stdout from gunicorn and the app, one access line per request, never the payload."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest

from ride_duration.logs import JsonFormatter
from tests.support import Server, http

ACCESS_FIELDS = {"time", "level", "logger", "message", "event", "request_id", "method", "path", "status",
                 "latency_ms", "model_version", "rides", "remote_addr"}


def record(msg: str, *args: object, exc_info: object = None, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("test", logging.WARNING, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_formatter_writes_one_json_object_per_record_with_extras():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    line = JsonFormatter().format(record("model %s", "v1", exc_info=exc_info, event="model_rejected",
                                         path=Path("/m"), big=2**70))

    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "model v1" and body["level"] == "WARNING" and body["event"] == "model_rejected"
    assert body["path"] == "/m" and body["big"] == 2**70
    assert body["time"].endswith("Z") and "ValueError: boom" in body["exc_info"]


@pytest.fixture(scope="module")
def served_log(tmp_path_factory):
    """Traffic through real gunicorn (2 workers), then the whole captured stdout+stderr."""
    base = tmp_path_factory.mktemp("logs")
    canary = f"PAYLOAD-CANARY-{uuid.uuid4().hex}"
    metrics_dir = base / "prometheus"
    metrics_dir.mkdir()
    server = Server(env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "LOG_LEVEL": "info"}, workers=2,
                    log_path=base / "out.log")
    ride = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 987.654321, "secret": canary}
    requests = [  # method, path (with query), body, expected status
        ("POST", "/predict", json.dumps(ride), 200),
        ("POST", f"/predict?secret={canary}", json.dumps([ride, ride, ride]), 200),
        ("POST", "/predict", json.dumps({**ride, "PULocationID": canary}), 422),
        ("POST", "/predict", '{"trip_distance": 987.654321, "x": "' + canary + '"', 400),
        ("GET", f"/health?token={canary}", None, 200),
        ("GET", "/no/such/route", None, 404),
    ]
    sent: list[tuple[str, str, str, int]] = []
    with server:
        for i, (method, path, body, expected) in enumerate(requests):
            rid = f"trace-{i}-{uuid.uuid4().hex[:8]}"
            status, headers, _ = http(method, server.url + path, body,
                                      {"Content-Type": "application/json", "X-Request-ID": rid})
            assert (status, headers["X-Request-ID"]) == (expected, rid)
            sent.append((rid, method, path.split("?")[0], status))
    return (base / "out.log").read_text(), canary, sent


def test_every_line_is_a_json_object(served_log):
    text, _, _ = served_log
    lines = text.splitlines()
    assert len(lines) > 10
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_one_access_line_per_request_with_its_fields(served_log):
    text, _, sent = served_log
    ours = {rid for rid, *_ in sent}
    access = [b for b in map(json.loads, text.splitlines()) if b.get("event") == "request" and b["request_id"] in ours]

    assert [(b["request_id"], b["method"], b["path"], b["status"]) for b in access] == sent  # X-Request-ID round trip
    for body in access:
        assert ACCESS_FIELDS <= body.keys()
        assert body["latency_ms"] >= 0 and body["remote_addr"] == "127.0.0.1"
    assert [b["rides"] for b in access] == [1, 3, None, None, None, None]
    assert [bool(b["model_version"]) for b in access] == [True, True, False, False, False, False]


def test_no_payload_or_query_value_in_any_line(served_log):
    text, canary, _ = served_log
    assert canary not in text
    assert "987.654321" not in text
    assert "PAYLOAD-CANARY" not in text


def test_gunicorn_and_model_events_are_json_too(served_log):
    text, _, _ = served_log
    bodies = [json.loads(line) for line in text.splitlines()]
    assert any(b["logger"] == "gunicorn.error" and b["message"].startswith("Booting worker") for b in bodies)
    loaded = [b for b in bodies if b.get("event") == "model_loaded"]
    assert len(loaded) == 1 and loaded[0]["model_version"] and loaded[0]["source"] == "bundled"
