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


class GeventWorker(_GunicornGeventWorker):
    """gunicorn's gevent worker plus the header (first request) and send deadlines; JSON parse errors."""

    def init_process(self) -> None:
        settings = Settings()
        self.header_timeout = settings.header_timeout
        self.send_timeout = settings.send_timeout
        self.limits = settings.model_dump(include={"limit_request_line", "limit_request_fields",
                                                   "limit_request_field_size"})
        self.fresh: set[t.Any] = set()  # greenlets whose connection has not had its first request yet
        self.servers: list[StreamServer] = []
        super().init_process()

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
        try:
            AsyncWorker.handle(self, listener, client, addr)
        finally:
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
