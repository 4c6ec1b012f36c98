"""Every error the service answers with, and the JSON shape they share; and how the offline jobs fail.

Body: ``{"error": {"code": str, "message": str, "details": [...]?}}``. Messages
are written for clients: never a traceback, never the request payload.

The offline jobs (``python -m ride_duration …``, ``train.py``) end with an :class:`ExitCode`; a
:class:`JobError` carries its code and the one line that says what went wrong.
"""

from __future__ import annotations

import enum
import logging
import typing as t

from werkzeug.exceptions import HTTPException

if t.TYPE_CHECKING:
    from flask import Blueprint, Flask, Response

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: an error with an HTTP status and a stable machine-readable code.

    A subclass names both in its header, ``class Gone(ServiceError, status=410, code="gone")``;
    one it does not name is inherited.
    """

    status_code = 400
    code = "bad_request"

    def __init_subclass__(cls, status: int | None = None, code: str | None = None, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, details: list[dict[str, t.Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, t.Any]:
        body: dict[str, t.Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class MalformedJSON(ServiceError, status=400, code="malformed_json"):
    """The body is not valid JSON (or not the JSON shape the route reads)."""


class UnsupportedMediaType(ServiceError, status=415, code="unsupported_media_type"):
    """A ``Content-Type`` the route does not read."""


class PayloadTooLarge(ServiceError, status=413, code="payload_too_large"):
    """A body larger than ``MAX_CONTENT_LENGTH`` bytes."""


class RequestTimeout(ServiceError, status=408, code="request_timeout"):
    """The request body did not arrive in time (BODY_TIMEOUT / BODY_MIN_RATE)."""


class InvalidInput(ServiceError, status=422, code="invalid_input"):
    """Well-formed, but a ride (or the batch) breaks a rule; ``details`` name each field and problem."""


class Unauthorized(ServiceError, status=401, code="unauthorized"):
    """No valid bearer token on a prediction route while ``API_TOKENS_FILE`` is set (web/auth.py)."""


class ModelNotReady(ServiceError, status=503, code="model_not_ready"):
    """No model is loaded (yet, or not any more): ``/ready`` says why."""


class Overloaded(ServiceError, status=503, code="overloaded"):
    """The worker already has ``MAX_INFLIGHT`` requests in flight; answered with ``Retry-After``."""


def _json(body: dict[str, t.Any], status: int) -> Response:
    from flask import jsonify

    response = jsonify(body)
    response.status_code = status
    return response


def handle_service_error(exc: ServiceError) -> Response:
    return _json(exc.to_dict(), exc.status_code)


HTTP_CODES = {413: PayloadTooLarge.code}


def render_http_errors_under(app: Flask, prefixes: t.Iterable[str],
                            render: t.Callable[[HTTPException], Response]) -> None:
    """Let a protocol (MLflow, V2) answer HTTP errors on its own paths, routing 404/405 included."""
    app.extensions.setdefault("http_error_renderers", []).append((tuple(prefixes), render))


def use_protocol_errors(bp: Blueprint, prefixes: t.Iterable[str],
                        error_response: t.Callable[[int, str], Response]) -> None:
    """Give a protocol blueprint its own error shape for HTTP errors and bugs on its paths.

    ``error_response(status, message)`` renders the protocol's body; routing 404/405 under
    ``prefixes`` use it too, and an unexpected exception becomes a generic 500 in that shape.
    """
    prefixes = tuple(prefixes)

    def on_http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    def on_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error under %s", prefixes[0])
        return error_response(500, "internal server error")

    bp.register_error_handler(HTTPException, on_http_error)
    bp.register_error_handler(Exception, on_unexpected)
    bp.record_once(lambda state: render_http_errors_under(state.app, prefixes, on_http_error))


def handle_http_exception(exc: HTTPException) -> Response:
    from flask import current_app, request

    for prefixes, render in current_app.extensions.get("http_error_renderers", ()):
        if any(request.path == p or request.path.startswith(p + "/") for p in prefixes):
            return render(exc)
    code = HTTP_CODES.get(exc.code or 0) or (exc.name or "error").lower().replace(" ", "_")
    response = _json({"error": {"code": code, "message": exc.description or exc.name}}, exc.code or 500)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _json({"error": {"code": "internal_error", "message": "internal server error"}}, 500)


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)


# ---- the offline jobs ---------------------------------------------------------------------------

class ExitCode(enum.IntEnum):
    """What every job exits with (the jobs' pages in docs/ list which codes each one uses)."""

    OK = 0
    """Done (``train``/``retrain``/``promote``: promoted)."""
    ERROR = 1
    """The model cannot be loaded, a dependency is unreachable (registry, Pushgateway, broker, a
    download), or an unexpected failure: worth a retry or a look at the log."""
    BAD_INPUT = 2
    """A file, column, type, range, flag or environment variable the job cannot use (retrain and
    promote: also "no data yet"). The same run would fail the same way: fix the input."""
    KEPT_CHAMPION = 3
    """The gate kept the champion (``train``, ``retrain``, ``promote``)."""
    DRIFT = 4
    """``monitor --fail-on-drift`` found drift (the report is written)."""


class JobError(Exception):
    """A job cannot go on. The message is the one line it logs (no traceback, unless ``--debug``)."""

    exit_code = ExitCode.ERROR

    def __str__(self) -> str:
        return " ".join(super().__str__().split())  # one line, whatever a library's message held


class BadInput(JobError):
    """An input the job cannot use; the message names the file, column, flag or variable and the problem."""

    exit_code = ExitCode.BAD_INPUT
