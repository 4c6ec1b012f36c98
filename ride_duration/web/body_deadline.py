"""Request bodies must arrive on time: ``BODY_TIMEOUT`` seconds of grace, then ``BODY_MIN_RATE`` bytes/s.

WSGI middleware around the Flask app: a request with a body has it read here, in chunks, each
under a gevent timer whose deadline is ``start + BODY_TIMEOUT + received / BODY_MIN_RATE``; a
body declared larger than ``MAX_CONTENT_LENGTH`` is left to Flask's 413 without being read.
The view then reads the buffered copy. A missed deadline does not stop the request from being
answered: Flask gets an empty body and a marker in the environ, the ``before_request`` hook
raises :class:`~ride_duration.errors.RequestTimeout` (408, the service's error shape, logged
and counted like any answer), and gunicorn is told to close the connection (the rest of the
body is still on the wire).

Without gevent's monkey-patching (a sync or gthread worker) bodies are read as before; the
worker's own socket timeout bounds each read.
"""

from __future__ import annotations

import io
import time
import typing as t

from flask import current_app, request

from ..errors import RequestTimeout

if t.TYPE_CHECKING:
    from flask import Flask

    from ..config import Settings

TIMED_OUT = "ride_duration.body_timed_out"
CHUNK = 64 * 1024


class BodyTimedOut(Exception):
    """Raised by the gevent timer inside a body read."""


def gevent_timeout() -> t.Any:
    """``gevent.Timeout`` when gevent has patched the socket module (the default worker), else None."""
    try:
        from gevent import Timeout, monkey
    except ImportError:
        return None
    return Timeout if monkey.is_module_patched("socket") else None


class BodyDeadline:
    """Read each request body under the pace deadline before the app sees it."""

    def __init__(self, app: t.Any, settings: Settings) -> None:
        self.app = app
        self.grace = settings.body_timeout
        self.rate = float(settings.body_min_rate)
        self.limit = settings.max_content_length
        self.timeout = gevent_timeout()

    def __call__(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if self.timeout is None:
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked:
            if not length or length == "0" or not length.isdigit() or int(length) > self.limit:
                return self.app(environ, start_response)  # no body, or Flask answers 400/413 unread
        want = self.limit + 1 if chunked else int(length)
        try:
            body = self.read(environ["wsgi.input"], want)
        except (BodyTimedOut, TimeoutError):
            environ[TIMED_OUT] = True
            body = b""
            response = getattr(start_response, "__self__", None)  # gunicorn's Response
            if hasattr(response, "force_close"):
                response.force_close()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def read(self, stream: t.Any, want: int) -> bytes:
        start = time.monotonic()
        chunks: list[bytes] = []
        got = 0
        while got < want:
            remaining = start + self.grace + got / self.rate - time.monotonic()
            if remaining <= 0:
                raise BodyTimedOut
            with self.timeout(remaining, BodyTimedOut):
                chunk = stream.read(min(CHUNK, want - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def reject_late_body() -> None:
    """before_request: answer 408 when the body missed its deadline."""
    if request.environ.get(TIMED_OUT):
        settings = current_app.config["SETTINGS"]
        raise RequestTimeout(f"the request body did not arrive in time: {settings.body_timeout:g} s, then at least "
                             f"{settings.body_min_rate} bytes/s")


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap the WSGI app in :class:`BodyDeadline` and register the 408 hook."""
    app.wsgi_app = BodyDeadline(app.wsgi_app, settings)  # type: ignore[method-assign]
    app.before_request(reject_late_body)
