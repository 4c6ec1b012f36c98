"""``X-Request-ID`` on every response: the caller's if it is sane, else a fresh one."""

from __future__ import annotations

import re
import typing as t
from random import getrandbits

from flask import g, request

if t.TYPE_CHECKING:
    from flask import Flask, Response

HEADER = "X-Request-ID"
_SAFE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_id() -> str:
    """128 random bits as 32 hex digits: an identifier, not a secret (``random`` reseeds after fork)."""
    return f"{getrandbits(128):032x}"


def assign() -> None:
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
    g.request_id = incoming if _SAFE.match(incoming) else new_id()


def stamp(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id") or new_id()
    return response


def init_app(app: Flask) -> None:
    app.before_request(assign)
    app.after_request(stamp)
