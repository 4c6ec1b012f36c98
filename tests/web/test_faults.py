"""Faults under load, against real gunicorn on loopback: redeploy (SIGTERM), a dying worker
(SIGKILL), a reload (SIGHUP) and worker recycling (max_requests).

Each test runs a bounded client loop (8 threads, each one raw HTTP/1.1 request per
connection, ``Connection: close``) and classifies every attempt by what the client saw:

* ``ok``         a complete 2xx response
* ``refused``    the connection was refused (nothing is listening any more)
* ``unanswered`` the connection was reset before a single response byte: it sat in the
                 kernel's listen backlog and no worker ever accepted it
* ``failed``     anything an accepted request must never get: a 5xx, another status, a
                 truncated response, a reset after bytes arrived, a timeout
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support import Server

pytestmark = pytest.mark.timeout(300)  # a hang guard (servers start slowly on a loaded box)

CLIENTS = 8
RIDE = json.dumps({"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}).encode()
BATCH = json.dumps([{"PULocationID": 1 + i % 265, "DOLocationID": 1 + (7 * i) % 265, "trip_distance": i % 30 + 0.5}
                    for i in range(2000)]).encode()


def raw_request(port: int, body: bytes, timeout: float = 10.0) -> str:
    """One POST /predict on a fresh connection; returns the outcome class (see module doc)."""
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "failed"
    data = b""
    try:
        with sock:
            sock.sendall(head + body)
            while chunk := sock.recv(65536):
                data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return "unanswered" if not data else "failed"
    except OSError:
        return "failed"
    if not data:
        return "unanswered"
    header, _, payload = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1]) if header.startswith(b"HTTP/1.1 ") else 0
    length = next((int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    if not 200 <= status < 300 or length != len(payload):
        return "failed"
    return "ok"


class Load:
    """``CLIENTS`` threads sending requests until stopped (or ``max_seconds``); records outcomes."""

    def __init__(self, port: int, max_seconds: float = 30.0, batch_every: int = 0) -> None:
        self.port, self.max_seconds, self.batch_every = port, max_seconds, batch_every
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome), monotonic
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline and n < 200_000:
            n += 1
            body = BATCH if self.batch_every and n % self.batch_every == index % self.batch_every else RIDE
            start = time.monotonic()
            outcome = raw_request(self.port, body)
            with self.lock:
                self.outcomes.append((start, time.monotonic(), outcome))
            if outcome == "refused":
                time.sleep(0.01)

    def __enter__(self) -> Load:
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for th in self.threads:
            th.join(15)

    def count(self, outcome: str, after: float = 0.0) -> int:
        with self.lock:
            return sum(1 for s, _, o in self.outcomes if o == outcome and s >= after)

    def wait_for(self, n_ok: int, timeout: float = 15.0) -> None:
        """Block until ``n_ok`` more requests succeeded (the load is really flowing)."""
        target = self.count("ok") + n_ok
        end = time.monotonic() + timeout
        while self.count("ok") < target and time.monotonic() < end:
            time.sleep(0.02)
        assert self.count("ok") >= target, f"load never reached {n_ok} ok: {self.summary()}"

    def summary(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for _, _, o in self.outcomes:
                out[o] = out.get(o, 0) + 1
            return out


def wait_workers(server: Server, n: int, exclude: set[int] = frozenset(), timeout: float = 20.0) -> set[int]:
    """Wait until ``n`` workers run and none of them is in ``exclude``; returns their PIDs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = server.worker_pids()
        if len(pids) == n and not pids & exclude:
            return pids
        time.sleep(0.01)
    raise AssertionError(f"workers did not settle at {n} (now {server.worker_pids()}, excluded {exclude})")


def test_sigterm_drains_accepted_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    server = Server(workers=2, log_path=tmp_path / "gunicorn.log").start(wait_for="/ready")
    try:
        with Load(server.port, batch_every=4) as load:
            load.wait_for(200)
            sent_at = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.proc is not None
            server.proc.wait(35)
            exited_in = time.monotonic() - sent_at
            end = time.monotonic() + 10  # the clients now meet a closed port
            while load.count("refused", after=sent_at + exited_in) < 1 and time.monotonic() < end:
                time.sleep(0.01)
        summary = load.summary()
        in_flight_done = sum(1 for s, e, o in load.outcomes if s < sent_at < e and o == "ok")
        print(f"SIGTERM: exit in {exited_in:.2f}s, outcomes {summary}, in flight at the signal and "
              f"completed: {in_flight_done}")
        assert server.proc.returncode == 0, server.log_text()[-2000:]
        assert exited_in < 30, "gunicorn outlived its graceful timeout"
        assert summary.get("failed", 0) == 0, summary
        # only connections still in the listen backlog (never accepted) may be reset unanswered
        assert summary.get("unanswered", 0) <= CLIENTS, summary
        assert in_flight_done >= 1, "no request was in flight at the signal: the test proved nothing"
        assert load.count("refused", after=sent_at + exited_in) >= 1, "new connections were not refused"
        assert raw_request(server.port, RIDE) == "refused"
    finally:
        server.stop()


def held_connections(pid: int, port: int) -> int:
    """Client connections to ``port`` whose server end is open in process ``pid`` (established or
    half-closed): what a worker holds in flight, read from /proc (its sockets, the TCP table)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    held = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                # 01 ESTABLISHED, 08 CLOSE_WAIT (the listening socket, 0A, is shared with the master)
                if local_port == port and fields[3] in ("01", "08") and fields[9] in inodes:
                    held += 1
    return held


def test_sigkill_worker_is_replaced_and_only_its_requests_fail(tmp_path: Path) -> None:
    """A killed worker loses the connections it held, nothing else. How many that is depends on
    the worker model (sync: one; gevent: up to all the clients'), so the bound is counted: the
    victim is stopped (SIGSTOP: it accepts nothing more), its connections are read from /proc,
    then it is killed."""
    with Server(workers=2, log_path=tmp_path / "gunicorn.log") as server, Load(server.port) as load:
        server.wait("/ready")
        before = wait_workers(server, 2)
        load.wait_for(200)
        victim = min(before)
        os.kill(victim, signal.SIGSTOP)
        held = held_connections(victim, server.port)
        os.kill(victim, signal.SIGKILL)
        replaced = wait_workers(server, 2, exclude={victim}, timeout=20)
        new = (replaced - before).pop()
        # recovered = the replacement is up and requests succeed again (a liveness bound, not a timing)
        load.wait_for(100, timeout=20)
    summary = load.summary()
    worker = [line for line in server.log_text().splitlines() if "Using worker" in line]
    print(f"SIGKILL worker {victim} holding {held} connections: replaced by {new}, outcomes {summary}, {worker}")
    failed = summary.get("failed", 0) + summary.get("unanswered", 0) + summary.get("refused", 0)
    assert held <= CLIENTS, f"the victim held {held} connections, but only {CLIENTS} clients exist"
    assert failed <= held, f"the killed worker held {held} connections, yet {failed} failed: {summary}"
    assert summary.get("refused", 0) == 0, "the listening socket went away with a worker"


def test_sighup_reload_under_load_fails_nothing(tmp_path: Path) -> None:
    with Server(workers=2, log_path=tmp_path / "gunicorn.log") as server, Load(server.port) as load:
        server.wait("/ready")
        before = wait_workers(server, 2)
        load.wait_for(200)
        server.signal(signal.SIGHUP)
        after = wait_workers(server, 2, exclude=before)
        load.wait_for(300)
    summary = load.summary()
    print(f"SIGHUP: workers {sorted(before)} -> {sorted(after)}, outcomes {summary}")
    assert set(summary) == {"ok"}, summary


def test_max_requests_recycling_under_load_fails_nothing(tmp_path: Path) -> None:
    env = {"GUNICORN_CMD_ARGS": "--max-requests 50 --max-requests-jitter 5"}
    with Server(env=env, workers=2, log_path=tmp_path / "gunicorn.log") as server, Load(server.port) as load:
        server.wait("/ready")
        first = wait_workers(server, 2)
        seen = set(first)
        end = time.monotonic() + 20
        while len(seen) < len(first) + 6 and time.monotonic() < end:  # at least 6 recycles
            seen |= server.worker_pids()
            time.sleep(0.005)
        load.wait_for(50)
    summary = load.summary()
    print(f"max_requests: {len(seen) - len(first)} workers recycled, outcomes {summary}")
    assert len(seen) - len(first) >= 6, "workers were not recycled"
    assert set(summary) == {"ok"}, summary


def test_sigterm_with_keepalive_connections_open_loses_no_request(tmp_path: Path) -> None:
    """Busy keep-alive connections get their in-flight answers (the last one says Connection:
    close); idle ones are closed by the server, not left to the SIGKILL; exit within the timeout."""
    import http.client

    server = Server(workers=2, log_path=tmp_path / "gunicorn.log").start(wait_for="/ready")
    outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    def busy() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                conn.request("POST", "/predict", RIDE, {"Content-Type": "application/json"})
            except OSError:
                outcome = "not_sent"  # could not even write: nothing was in flight
            else:
                try:
                    resp = conn.getresponse()
                    body = resp.read()
                    outcome = "ok" if resp.status == 200 and b"duration" in body else f"status_{resp.status}"
                    if resp.will_close:
                        outcome += "_closed"
                except (OSError, http.client.HTTPException):
                    outcome = "lost"  # written, never answered
            with lock:
                outcomes.append((sent, time.monotonic(), outcome))
            if outcome != "ok":
                break
        conn.close()

    idle = []
    try:
        for _ in range(32):  # idle keep-alive connections: one answered request each, then silence
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            idle.append(sock)
        threads = [threading.Thread(target=busy, daemon=True) for _ in range(CLIENTS)]
        for th in threads:
            th.start()
        end = time.monotonic() + 20  # every busy connection answered a few requests: the load flows
        while time.monotonic() < end:
            with lock:
                if len(outcomes) >= 5 * CLIENTS:
                    break
            time.sleep(0.01)
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc is not None
        server.proc.wait(35)
        exited_in = time.monotonic() - signalled
        stop.set()
        for th in threads:
            th.join(15)
        idle_closed = 0
        for sock in idle:  # the rest of the /health answer, then EOF
            try:
                while sock.recv(65536):
                    pass
                idle_closed += 1
            except ConnectionResetError:
                idle_closed += 1
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    summary: dict[str, int] = {}
    for _, _, o in outcomes:
        summary[o] = summary.get(o, 0) + 1
    in_flight = sum(1 for s, e, o in outcomes if s < signalled < e and o.startswith("ok"))
    print(f"SIGTERM with keep-alive: exit in {exited_in:.2f}s, outcomes {summary}, "
          f"answered across the signal {in_flight}, idle closed {idle_closed}/32")
    assert server.proc.returncode == 0, server.log_text()[-2000:]
    assert summary.get("lost", 0) == 0, summary
    assert not [o for o in summary if o.startswith("status_")], summary
    assert in_flight >= 1, "no request was in flight at the signal: the test proved nothing"
    assert summary.get("ok_closed", 0) >= 1, "no answer told its client the connection closes"
    assert idle_closed == 32, "idle keep-alive connections were not closed by the server"
    assert exited_in < 30, "gunicorn outlived its graceful timeout"
