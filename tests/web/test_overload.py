"""Overload is defined: beyond MAX_INFLIGHT requests in flight a worker answers 503 ``overloaded``
with ``Retry-After`` at once, counts it, and nothing else fails (issue 22).

One worker with ``MAX_INFLIGHT=4`` and 64 open keep-alive connections; in each round every
connection gets one request written back to back, so many are ready in the same turn of the
worker's loop. Rounds repeat (at most 20) until the limit has refused some. Every answer must be
a prediction or the 503 in the error shape; the refused requests never reached the app (no
access line for them: they did not queue behind the others); the metric counts exactly the
503s seen; the probes and a later request are unaffected. Counts only, no timing.
"""

from __future__ import annotations

import json
import re
import socket
import typing as t

import pytest

from tests.conftest import REFERENCE_RIDE
from tests.support import http, post_json, running

pytestmark = pytest.mark.timeout(120)

CONNECTIONS = 64
ROUNDS = 20
LIMIT = 4
BODY = json.dumps(REFERENCE_RIDE).encode()
REQUEST = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {buf[:80]!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside an answer body")
        body += chunk
    assert len(body) == length, "more than one answer to one request"
    return int(lines[0].split()[1]), headers, body


def overloaded_count(url: str) -> float:
    text = http("GET", url + "/metrics")[2].decode()
    found = re.search(r"^ride_duration_overloaded_requests_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def predict_lines(server: t.Any) -> int:
    return sum(1 for line in server.log_text().splitlines()
               if '"event":"request"' in line and '"path":"/predict"' in line)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: t.Any):
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": "", "MAX_INFLIGHT": str(LIMIT)}, workers=1) as srv:
        yield srv


def test_a_flood_past_the_limit_gets_fast_503s_and_nothing_else_fails(limited):
    socks = [socket.create_connection(("127.0.0.1", limited.port), timeout=30) for _ in range(CONNECTIONS)]
    statuses: dict[int, int] = {}
    refused_bodies: list[dict[str, t.Any]] = []
    try:
        for sock in socks:  # every connection has its greenlet before the flood
            sock.sendall(REQUEST)
        for sock in socks:
            assert read_answer(sock)[0] in (200, 503)
        lines_before, before = predict_lines(limited), overloaded_count(limited.url)
        rounds = 0
        while rounds < ROUNDS and not statuses.get(503):
            rounds += 1
            for sock in socks:
                sock.sendall(REQUEST)
            for sock in socks:
                status, headers, body = read_answer(sock)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    assert "duration" in json.loads(body)
                    continue
                assert status == 503, (status, body[:200])
                assert headers.get("retry-after") == "1", headers
                assert headers.get("content-type") == "application/json", headers
                refused_bodies.append(json.loads(body))
    finally:
        for sock in socks:
            sock.close()
    print(f"{rounds} round(s) of {CONNECTIONS} requests: {statuses}")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.get(503), f"no request refused in {rounds} rounds of {CONNECTIONS} (MAX_INFLIGHT={LIMIT})"
    assert statuses.get(200), "the limit refused everything"
    for body in refused_bodies:
        assert body["error"]["code"] == "overloaded"
        assert "MAX_INFLIGHT" in body["error"]["message"]
    # refused requests were answered before reaching the app: only the served ones have an access
    # line (the app writes and flushes it before its answer is sent, so all are there by now)
    assert predict_lines(limited) == lines_before + statuses[200]
    assert overloaded_count(limited.url) - before == statuses[503]
    # afterwards: probes and a plain request are fine
    assert http("GET", limited.url + "/ready", timeout=5)[0] == 200
    status, _, body = post_json(limited.url + "/predict", REFERENCE_RIDE, timeout=5)
    assert status == 200 and "duration" in body
