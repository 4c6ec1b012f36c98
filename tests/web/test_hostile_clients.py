"""Slow and hostile clients against real gunicorn (the default gevent worker) on loopback.

Each test holds attacking connections open (bench/hostile.py's attackers: silent, trickled
headers, trickled body, hundreds of idle keep-alive connections, oversized headers, a reader
that never reads 10,000 predictions) while a polite client POSTs a ride every 0.1 s on a fresh
connection. Every polite request must succeed within a liveness bound (5 s: not a timing
claim), the server must close or answer the attackers on its deadlines, and it must be healthy
afterwards. The deadlines are shortened through their Settings env vars so each test takes
seconds; the default values are exercised by ``bench/hostile.py`` (make serve's config).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import typing as t

import pytest

from bench.hostile import BATCH, Polite, under_attack
from tests.conftest import REFERENCE_RIDE
from tests.support import http, post_json, running

pytestmark = pytest.mark.timeout(240)  # a hang guard (the module server starts in the first test)

DEADLINES = {"HEADER_TIMEOUT": "1.5", "KEEPALIVE_TIMEOUT": "2", "BODY_TIMEOUT": "2", "SEND_TIMEOUT": "2"}
SECONDS = 5.0  # polite client per test: ~50 requests


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": "", **DEADLINES}) as srv:
        yield srv


def attacked(server, attacks: list[tuple[str, int]], hold: float = 15.0) -> dict[str, t.Any]:
    """Run the attack next to the polite client; assert the polite client and the server are fine."""
    row = under_attack(server.port, attacks, SECONDS, interval=0.1, timeout=5.0, hold=hold)
    print(json.dumps({k: v for k, v in row.items() if k != "failures"}))
    assert row["failed"] == 0, row["failures"]
    assert row["answered"] >= 20, row  # the polite client really ran
    status, _, body = post_json(server.url + "/predict", REFERENCE_RIDE, timeout=5)
    assert status == 200 and "duration" in body
    assert http("GET", server.url + "/ready", timeout=5)[0] == 200
    return {a["kind"]: a for a in row["attackers"]}


def error_code(raw: bytes) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return json.loads(body)["error"]["code"]


def test_silent_connections_are_closed_and_starve_nobody(server):
    silent = attacked(server, [("silent", 16)])["silent"]
    assert silent["closed_by_server"] >= 16, silent  # HEADER_TIMEOUT closed every one of the first fill
    assert silent["statuses"] == {}, "a silent connection got an answer"
    assert silent["median_life_s"] >= 1.0, f"closed before HEADER_TIMEOUT (1.5 s): {silent}"


def test_trickled_headers_are_cut_at_the_header_deadline(server):
    trickle = attacked(server, [("headers", 16)])["headers"]
    # a header line a second never lets 1.5 s pass idle: had each line restarted the deadline,
    # not one of these would have been closed within the run
    assert trickle["closed_by_server"] >= 16, f"one header line a second kept the connections open: {trickle}"
    assert trickle["median_life_s"] >= 1.0, f"closed before HEADER_TIMEOUT (1.5 s): {trickle}"


def test_trickled_body_gets_408_in_the_error_shape(server):
    attack = attacked(server, [("body", 32)])
    body = attack["body"]
    assert body["statuses"].get(408, 0) >= 32 and set(body["statuses"]) == {408}, body
    assert body["closed_by_server"] >= 32, "the connection stayed open after the 408"


def test_trickled_body_answer_names_the_deadline(server):
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(json.dumps(REFERENCE_RIDE))}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"{")
        raw = b""
        while chunk := sock.recv(65536):  # the server answers, then closes
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 408 "), raw[:200]
    assert error_code(raw) == "request_timeout"
    assert b"x-request-id:" in raw.lower()


def test_hundreds_of_idle_keepalive_connections_are_closed_and_starve_nobody(server):
    idle = attacked(server, [("idle", 256)])["idle"]
    assert idle["statuses"].get(200, 0) >= 256, idle  # each got its one answer
    assert idle["closed_by_server"] >= 256, idle  # then KEEPALIVE_TIMEOUT closed it, within the run
    assert idle["median_life_s"] >= 1.0, f"closed before KEEPALIVE_TIMEOUT (2 s): {idle}"


def test_oversized_request_lines_and_headers_get_json_errors(server):
    over = attacked(server, [("oversized", 8)])["oversized"]
    assert set(over["statuses"]) == {414, 431}, over
    # the server closes each one after its error answer; when the attack stops, each of the n
    # attackers may still have one connection on its way (opened, not answered yet)
    assert over["closed_by_server"] >= over["opened"] - over["n"] > 0, over


@pytest.mark.parametrize(("extra", "status", "code"), [
    (b"X-Big: " + b"a" * 9000 + b"\r\n", 431, "request_header_fields_too_large"),
    (b"".join(b"X-F%d: v\r\n" % i for i in range(150)), 431, "request_header_fields_too_large"),
    (b"", 414, "request_line_too_long"),
])
def test_oversized_answers_are_json_and_echo_nothing(server, extra, status, code):
    path = b"/health" if extra else b"/health?" + b"q" * 5000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert error_code(raw) == code
    assert b"aaaa" not in raw and b"qqqq" not in raw and b"X-F1" not in raw


def test_readers_that_never_read_10000_predictions_do_not_hold_the_server(server):
    # the kernel's socket buffers take a 10,000-ride answer (~190 KB) whole; the connection then
    # idles unread and KEEPALIVE_TIMEOUT closes it: read out after 4 s, each is answered and closed
    slow = attacked(server, [("slowread", 8)], hold=4.0)["slowread"]
    assert slow["statuses"].get(200, 0) >= 8, slow
    assert slow["closed_by_server"] >= 8, f"the server kept connections that never read: {slow}"


def test_send_timeout_cuts_off_a_client_that_never_reads_more_than_the_buffers_hold(server):
    # 30 pipelined 10,000-ride requests (~5.7 MB of answers, beyond loopback's ~4 MB of buffers),
    # never read: the worker's write blocks, SEND_TIMEOUT (2 s) must close the connection
    request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(BATCH)) + BATCH
    timeouts_before = server.log_text().count("SEND_TIMEOUT")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sender = threading.Thread(target=send_quietly, args=(sock, request * 30), daemon=True)
    polite = Polite(server.port)
    sender.start()
    polite.start()
    deadline = time.monotonic() + 30  # a liveness bound: SEND_TIMEOUT is 2 s
    while (server.log_text().count("SEND_TIMEOUT") == timeouts_before or polite.summary()["answered"] < 20) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    polite.stop()
    answers, closed = 0, False
    sock.settimeout(2)
    try:
        buffered = b""
        while chunk := sock.recv(1 << 20):
            buffered += chunk
        closed = True
        answers = buffered.count(b"HTTP/1.1 200 ")
    except ConnectionResetError:  # closed with our pipelined requests unread: RST
        closed = True
    except TimeoutError:
        pass
    finally:
        sock.close()
    sender.join(5)
    assert closed and answers < 30, f"the connection was still open after SEND_TIMEOUT ({answers} answers read)"
    assert server.log_text().count("SEND_TIMEOUT") > timeouts_before, "no SEND_TIMEOUT was logged"
    assert polite.summary()["failed"] == 0, polite.summary()
    assert polite.summary()["answered"] >= 20


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_refusals_are_logged_without_the_request_and_nothing_errored(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Canary: " + b"canary" * 2000 + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 431 ")

    def logged() -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
        log = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
        return log, [r for r in log if r["level"] == "WARNING" and "invalid request" in r["message"]]

    deadline = time.monotonic() + 10
    while not (found := logged())[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    log, warnings = found
    assert warnings, "the refusal was not logged"
    assert "canarycanary" not in server.log_text()
    errors = [r["message"] for r in log if r["level"] in ("ERROR", "CRITICAL")]
    assert not errors, errors[:3]


def test_a_chunked_body_is_still_read_whole(server):
    body = json.dumps(REFERENCE_RIDE).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:300]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["duration"] > 0
