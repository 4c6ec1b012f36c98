"""Floor: a bare WSGI callable that reads the body and returns a constant JSON answer."""

from __future__ import annotations

BODY = b'{"duration":12.5,"model_version":"constant"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [BODY]
