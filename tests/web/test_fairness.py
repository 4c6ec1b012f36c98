"""Fair scheduling in the gevent worker: a keep-alive client that always has its next request
ready must not hold the worker's other connections (issue 22).

The starvation this guards against: gunicorn's gevent worker serves a keep-alive connection in
one greenlet that loops ``parse -> handle -> parse``; when the client's next request is already
in the socket, the greenlet never waits on I/O, so it never yields to the hub, and every other
connection of the worker waits until it happens to hit EAGAIN (p99 150-300 ms at wrk c2..c8).

The test makes "the next request is already there" certain instead of likely: two keep-alive
connections to ONE worker each pipeline their whole request stream (HTTP/1.1 pipelining), so
both always have a request waiting while both streams last. The server's own access log gives
the order it answered them in (``X-Request-ID`` tags each request with its connection); in
that window, the longest run of answers on one connection is how many requests the other
connection's waiting request sat behind. A fair worker alternates (runs of 1-2); the old one
answered one connection's whole stream before the other's. Counts only, no timing.
"""

from __future__ import annotations

import json
import socket
import threading
import typing as t

import pytest

from tests.conftest import REFERENCE_RIDE
from tests.support import running

pytestmark = pytest.mark.timeout(120)

STREAM = 600
"""Requests each connection pipelines (~100 KiB: the kernel buffers hold most of it at once)."""
HANDFUL = 8
"""Most answers on one connection while the other has a request waiting."""
BODY = json.dumps(REFERENCE_RIDE).encode()


def request(tag: str, body: bytes = BODY) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: {tag}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class Pipeliner:
    """One keep-alive connection that writes ``n`` requests back to back and reads the answers."""

    def __init__(self, port: int, name: str, n: int, body: bytes = BODY) -> None:
        self.name, self.n, self.body = name, n, body
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.answers = 0
        self.error: BaseException | None = None

    def warm(self) -> None:
        """One request and its answer: the connection's greenlet exists before the streams start."""
        self.sock.sendall(request(f"{self.name}-warm"))
        self.read_answers(1)

    def read_answers(self, n: int) -> None:
        buf = b""
        done = 0
        while done < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.name}: closed after {done} answers")
            buf += chunk
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = buf[:head_end].decode("latin-1")
                assert head.startswith("HTTP/1.1 200"), head.splitlines()[0]
                length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                              if line.lower().startswith("content-length:"))
                if len(buf) < head_end + 4 + length:
                    break
                buf = buf[head_end + 4 + length:]
                done += 1
        self.answers += done

    def stream(self, go: threading.Event) -> tuple[threading.Thread, threading.Thread]:
        payload = b"".join(request(f"{self.name}-{i:05d}", self.body) for i in range(self.n))

        def write() -> None:
            go.wait(10)
            self.sock.sendall(payload)

        def read() -> None:
            try:
                self.read_answers(self.n)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc

        threads = (threading.Thread(target=write, daemon=True), threading.Thread(target=read, daemon=True))
        for thread in threads:
            thread.start()
        return threads


def served_order(log: str) -> list[str]:
    """Connection names in the order the server answered their requests (access log lines)."""
    order = []
    for line in log.splitlines():
        if '"event":"request"' in line:
            tag = json.loads(line).get("request_id") or ""
            if tag[:2] in ("a-", "b-", "s-", "m-") and not tag.endswith("-warm"):
                order.append(tag[0])
    return order


def longest_run_while_both_wait(order: list[str], n: int) -> int:
    """The longest run of one connection's answers while both had requests waiting: from the
    first answer of the later-starting connection (its stream may reach the server a moment after
    the other's) until either stream is done (then only one connection has requests left)."""
    left = {"a": n, "b": n}
    longest = run = 0
    last = None
    both_seen = False
    for name in order:
        both_seen = both_seen or (last is not None and name != last)
        run = run + 1 if name == last else 1
        last = name
        if both_seen:
            longest = max(longest, run)
        left[name] -= 1
        if not left[name]:
            break
    return longest


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: t.Any):
    # one worker, so both connections are its; deadlines as shipped (the keep-alive timer is not
    # reached: the streams never pause)
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": ""}, workers=1) as srv:
        yield srv


def test_a_pipelining_connection_does_not_hold_the_other(one_worker):
    a, b = Pipeliner(one_worker.port, "a", STREAM), Pipeliner(one_worker.port, "b", STREAM)
    try:
        a.warm()
        b.warm()
        go = threading.Event()
        threads = [*a.stream(go), *b.stream(go)]
        go.set()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads), "the streams did not finish in 90 s"
        assert a.error is None and b.error is None, (a.error, b.error)
        assert a.answers == b.answers == STREAM + 1
    finally:
        a.sock.close()
        b.sock.close()
    order = [name for name in served_order(one_worker.log_text()) if name in "ab"]  # flushed before each answer
    assert len(order) == 2 * STREAM, f"{len(order)} access lines for {2 * STREAM} requests"
    longest = longest_run_while_both_wait(order, STREAM)
    print(f"longest run of one connection while the other waited: {longest} "
          f"(first 60 answers: {''.join(order[:60])})")
    assert longest <= HANDFUL, (
        f"one connection was answered {longest} times in a row while the other had a request waiting")


BATCHES = 4
RIDES_PER_BATCH = 10_000


def test_single_rides_get_turns_inside_a_10k_batch(one_worker):
    """A connection pipelining 10,000-ride batches and one pipelining single rides, on one worker:
    a batch pauses between its phases and prediction slices, so several single rides are answered
    between two consecutive batch answers (a batch that held the worker for its whole length
    would let exactly one through: the fair turn alternates whole requests)."""
    big = json.dumps([REFERENCE_RIDE] * RIDES_PER_BATCH).encode()
    singles = 400
    m, s = Pipeliner(one_worker.port, "m", BATCHES, big), Pipeliner(one_worker.port, "s", singles)
    try:
        m.warm()
        s.warm()
        go = threading.Event()
        threads = [*m.stream(go), *s.stream(go)]
        go.set()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads), "the streams did not finish in 90 s"
        assert m.error is None and s.error is None, (m.error, s.error)
    finally:
        m.sock.close()
        s.sock.close()
    order = [name for name in served_order(one_worker.log_text()) if name in "ms"]
    batch_at = [i for i, name in enumerate(order) if name == "m"]
    assert len(batch_at) == BATCHES, order
    between = [later - earlier - 1 for earlier, later in zip(batch_at, batch_at[1:], strict=False)]
    print(f"single rides answered between consecutive batch answers: {between}")
    assert all(n >= 3 for n in between), between


def test_a_sliced_batch_predicts_exactly_what_one_call_does(app):
    """The batch path's pauses change when the worker's other requests run, never the answer."""
    from ride_duration.startup import get_holder
    from ride_duration.web import service

    model = get_holder(app).require()
    rides = [{"PULocationID": 1 + i % 265, "DOLocationID": 1 + (i * 7) % 265, "trip_distance": i % 50 / 3}
             for i in range(2 * service.SLICE + 17)]
    pauses: list[int] = []
    body = json.dumps(rides).encode()
    sliced, n = service.predict_body(body, model, 10_000, pause=lambda: pauses.append(1))
    whole, _ = service.predict_body(body, model, 10_000)
    assert n == len(rides) and sliced == whole
    assert len(pauses) == 1 + 1 + 2  # after parsing (> 64 KiB), after validating, between 3 slices
