"""The default gunicorn worker: gunicorn's gevent worker with a deadline on every way to hold a connection.

``gunicorn.workers.ggevent.GeventWorker`` already serves each connection in a greenlet (a slow
client costs a few KiB, not a worker) and bounds the wait for each request's headers with one
``gevent.Timeout(keepalive)`` around the parser (``AsyncWorker.handle``). This subclass adds:

* ``HEADER_TIMEOUT`` for the *first* request on a connection (the keep-alive timer is for the
  later ones), so a silent or trickling new connection is closed on its own deadline;
* ``SEND_TIMEOUT`` on the socket while a request is served: a client that stops reading its
  response (or stalls its body) is cut off instead of holding the greenlet forever; the
  timeout is cleared again for the keep-alive wait, which the parser timer bounds;
* HTTP parse errors (oversized request line or headers, malformed requests) answered in the
  service's error shape, without echoing what the client sent;
* a prompt hand-over when the worker leaves (``max_requests`` recycling, SIGTERM, SIGHUP): it
  stops accepting at once and checks every 0.1 s whether its connections are done, where
  gunicorn's loop ticks once a second (a recycle took the worker out for up to ~2 s). Open
  connections are still served to the end: each gets ``Connection: close`` on its next answer,
  and an idle keep-alive one is closed by its timer (at most ``KEEPALIVE_TIMEOUT``), never cut
  while a request may be on its way.

* **fair turns** (issue 22): each request's greenlet, once its headers are parsed, waits for one
  turn of the event loop before the app runs (:meth:`GeventWorker.fair_turn`), so every other
  connection whose request is ready is read in between. gunicorn's loop ``parse -> handle ->
  parse`` never waits on I/O when a keep-alive client's next request is already in the socket,
  so one fast client held the worker and its other connections waited (p99 150-300 ms at wrk
  c2..c8). ``gevent.sleep(0)`` is not enough: gevent may resume a greenlet that sleeps with 0
  before the loop polls for I/O again, for up to its switch interval (5 ms); a 0-second timer
  is due only after the next poll. The turn is skipped when the worker has no other
  connection (nothing to be fair to; c1 pays nothing). The app gets the same turn as
  ``environ["ride_duration.pause"]`` to yield between slices of a big batch;
* **a per-worker in-flight limit** (``MAX_INFLIGHT``): requests whose headers were read and that
  are not answered yet. Beyond it a request is answered at once, without running the app:
  503 ``overloaded`` in the service's error shape with ``Retry-After``, counted in
  ``ride_duration_overloaded_requests_total``. Probes (``/health``, ``/ready``) and ``/metrics``
  are exempt, so an overloaded pod is neither restarted nor taken out of its Service
  (docs/hardening.md).

The body deadline (``BODY_TIMEOUT``/``BODY_MIN_RATE``, 408) is WSGI middleware in the app
(:mod:`ride_duration.web.body_deadline`), so the 408 is logged and counted like any answer.
Settings come from :class:`ride_duration.config.Settings`, read once per worker.
"""

from __future__ import annotations

import time
import typing as t
from functools import partial

import gevent
import orjson
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.http import errors as http_errors
from gunicorn.sock import ssl_context
from gunicorn.util import write_nonblock
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from ..config import Settings
from ..errors import Overloaded
from .service import PAUSE_KEY

PARSE_ERRORS: tuple[tuple[t.Any, int, str, str, str], ...] = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "request_line_too_long",
     "the request line is longer than {limit_request_line} bytes"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large", "request_header_fields_too_large",
     "more than {limit_request_fields} header fields, or one longer than {limit_request_field_size} bytes"),
    ((http_errors.InvalidRequestLine, http_errors.InvalidRequestMethod, http_errors.InvalidHTTPVersion,
      http_errors.InvalidHeader, http_errors.InvalidHeaderName, http_errors.ObsoleteFolding), 400, "Bad Request",
     "bad_request", "malformed HTTP request"),
)
"""gunicorn parse errors answered as JSON: (exception types, status, reason, code, message); any
other error (TLS, proxy protocol, transfer codings) keeps gunicorn's own answer."""


TICK = 0.1
"""Seconds between the worker loop's heartbeats and its drain checks (gunicorn's: 1.0)."""

UNLIMITED_PATHS = frozenset({"/health", "/ready", "/metrics"})
"""Paths the in-flight limit never refuses: probes and scrapes must see the overloaded pod."""
RETRY_AFTER = "1"
"""Seconds a client refused by the in-flight limit is asked to wait (``Retry-After``)."""


def overloaded_app(limit: int, count: t.Callable[[], None]) -> t.Callable[..., list[bytes]]:
    """The answer beyond the in-flight limit: 503 in the error shape, ``Retry-After``, no app."""
    body = orjson.dumps(Overloaded(
        f"this worker has {limit} requests in flight (MAX_INFLIGHT); retry after {RETRY_AFTER} s").to_dict())
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Retry-After", RETRY_AFTER)]

    def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
        count()
        start_response(f"{Overloaded.status_code} Service Unavailable", list(headers))
        return [body]

    return app


def loop_turn() -> None:
    """Wait for one turn of gevent's event loop: a 0-second timer is due only after the loop's next
    poll for I/O, so every other greenlet with a ready socket runs first (``gevent.sleep(0)`` may
    resume the caller before that poll, for up to gevent's 5 ms switch interval)."""
    hub = gevent.get_hub()
    timer = hub.loop.timer(0)
    try:
        hub.wait(timer)
    finally:
        timer.close()


class GeventWorker(_GunicornGeventWorker):
    """gunicorn's gevent worker plus the header (first request) and send deadlines, JSON parse errors,
    a fair turn per request and the in-flight limit."""

    def init_process(self) -> None:
        settings = Settings()
        self.header_timeout = settings.header_timeout
        self.send_timeout = settings.send_timeout
        self.limits = settings.model_dump(include={"limit_request_line", "limit_request_fields",
                                                   "limit_request_field_size"})
        self.max_inflight = settings.max_inflight
        self.inflight = 0  # requests past their headers, not answered yet
        self.connections = 0  # open connections of this worker
        self.fresh: set[t.Any] = set()  # greenlets whose connection has not had its first request yet
        self.servers: list[StreamServer] = []
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = self.admit(self.wsgi)

    def fair_turn(self) -> None:
        """Let every other ready connection of this worker have its turn before going on.

        A 0-second timer is due after the loop's next poll for I/O, so connections whose
        requests arrived meanwhile are read first (``gevent.sleep(0)`` may resume this
        greenlet before that poll). Nothing to wait for when this is the only connection.
        """
        if self.connections > 1:
            loop_turn()

    def admit(self, app: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        """``app`` behind the in-flight limit and the fair turn."""
        from .metrics import OVERLOADED  # here, not at import: the master imports this module

        refuse = overloaded_app(self.max_inflight, OVERLOADED.inc)
        turn = self.fair_turn

        def admitted(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Any:
            if environ.get("PATH_INFO") in UNLIMITED_PATHS:
                return app(environ, start_response)
            environ[PAUSE_KEY] = turn
            self.inflight += 1
            try:
                if self.inflight > self.max_inflight:
                    return refuse(environ, start_response)
                turn()
                return app(environ, start_response)
            finally:
                self.inflight -= 1

        return admitted

    def run(self) -> None:
        """gunicorn's GeventWorker.run (StreamServer per listener) with TICK instead of 1 s."""
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for sock in self.sockets:
            sock.setblocking(1)
            server = StreamServer(sock, handle=partial(self.handle, sock), spawn=Pool(self.worker_connections),
                                  **ssl_args)
            if self.cfg.workers > 1:
                server.max_accept = 1  # accept one at a time: siblings get their share
            server.start()
            self.servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(TICK)
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while any(server.pool.free_count() != server.pool.size for server in self.servers):
            if time.monotonic() > deadline:
                self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                for server in self.servers:
                    server.stop(timeout=1)
                return
            self.notify()
            gevent.sleep(TICK)

    def handle(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        client.setblocking(1)  # as gunicorn's GeventWorker.handle; deadlines come from the timers
        me = gevent.getcurrent()
        self.fresh.add(me)
        self.connections += 1
        try:
            AsyncWorker.handle(self, listener, client, addr)
        finally:
            self.connections -= 1
            self.fresh.discard(me)

    def timeout_ctx(self) -> gevent.Timeout:
        """The deadline for the next request's complete headers: HEADER_TIMEOUT on a new
        connection, the keep-alive timeout after a response. Silent: expiry closes the connection."""
        me = gevent.getcurrent()
        if me in self.fresh:
            self.fresh.discard(me)
            return gevent.Timeout(self.header_timeout, False)
        return gevent.Timeout(self.cfg.keepalive, False)

    def handle_request(self, listener_name: t.Any, req: t.Any, sock: t.Any, addr: t.Any) -> bool:
        sock.settimeout(self.send_timeout)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except TimeoutError:
            self.log.info("closed a connection from %s: no socket progress for %ss (SEND_TIMEOUT)",
                          addr[0] if addr else "?", self.send_timeout)
            raise StopIteration from None  # AsyncWorker.handle closes the connection quietly
        finally:
            sock.settimeout(None)
            if not self.alive:  # max_requests reached (or a signal): let the siblings take new connections
                for server in self.servers:
                    server.stop_accepting()

    def handle_error(self, req: t.Any, client: t.Any, addr: t.Any, exc: BaseException) -> None:
        answer = next((row[1:] for row in PARSE_ERRORS if isinstance(exc, row[0])), None)
        if answer is None:
            super().handle_error(req, client, addr, exc)
            return
        status, reason, code, message = answer
        self.log.warning("invalid request from %s: %s", addr[0] if addr else "?", type(exc).__name__)
        body = orjson.dumps({"error": {"code": code, "message": message.format(**self.limits)}})
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            write_nonblock(client, head + body)
        except OSError:
            self.log.debug("could not send the error answer")
