"""``X-Request-ID`` on every response: the caller's if it is sane, else a fresh one."""

from __future__ import annotations

import re
import typing as t
import uuid

from flask import g, request

if t.TYPE_CHECKING:
    from flask import Flask, Response

HEADER = "X-Request-ID"
_SAFE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def assign() -> None:
    incoming = request.headers.get(HEADER, "")
    g.request_id = incoming if _SAFE.match(incoming) else uuid.uuid4().hex


def stamp(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id") or uuid.uuid4().hex
    return response


def init_app(app: Flask) -> None:
    app.before_request(assign)
    app.after_request(stamp)
