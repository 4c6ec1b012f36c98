"""Optional bearer tokens for the prediction routes: ``API_TOKENS_FILE`` (off when unset).

When set, ``POST /predict``, ``POST /invocations`` and ``POST /v2/models/.../infer`` need
``Authorization: Bearer <token>`` with a token from the file; without one they answer 401 in the
path's error shape (the service's ``{"error": {"code": "unauthorized", ...}}``, MLflow's
``UNAUTHENTICATED``, V2's ``{"error": ...}``) and ``WWW-Authenticate: Bearer`` (RFC 6750), before
the body is parsed or the model called. Everything else (``/health``, ``/ready``, ``/ping``, ``/metrics``, ``/model``,
V2 health and metadata, ``/docs``) stays open: probes and Prometheus cannot present a token, those
routes carry no ride data, and the ingress does not publish them (docs/security.md).

The file: one entry per line, either a token itself or ``sha256:<64 hex digits>``, the SHA-256 of
a token (the file then holds nothing a client could send); blank lines and ``#`` comments are
ignored. Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest` against every
entry, so the time taken does not depend on how much of a token matched or which entry did. The
file is re-read when it changes (a rotated Kubernetes Secret); a change that leaves it unreadable
or empty keeps the previous tokens and logs an error. At start-up a missing or empty file is an
error: auth was asked for, so the service does not start open.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import typing as t
from pathlib import Path

from flask import g, request

from ..errors import Unauthorized

if t.TYPE_CHECKING:
    from flask import Flask, Response

    from ..config import Settings

log = logging.getLogger(__name__)

PREDICTION_ENDPOINTS = frozenset({"api.predict", "mlflow.invocations", "v2.infer_route"})
"""Flask endpoints that need a token: every route that takes rides and returns predictions."""
REALM = "ride-duration"
_HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)  # RFC 6750's b64token


class TokenFileError(ValueError):
    """``API_TOKENS_FILE`` cannot be used: missing, unreadable, malformed or empty."""


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse(text: str, path: Path) -> tuple[bytes, ...]:
    """The SHA-256 digests the file's lines stand for (see the module docstring for the format)."""
    digests = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        hashed = _HASHED.fullmatch(line)
        if hashed:
            digests.append(bytes.fromhex(hashed[1]))
        elif line.lower().startswith("sha256:"):
            raise TokenFileError(f"{path}:{number}: sha256: needs exactly 64 hex digits")
        elif not _BEARER.fullmatch(f"Bearer {line}"):
            raise TokenFileError(f"{path}:{number}: a token is letters, digits and -._~+/ (then = padding)")
        else:
            digests.append(digest(line))
    if not digests:
        raise TokenFileError(f"{path} holds no tokens")
    return tuple(digests)


class TokenFile:
    """The accepted tokens' digests, re-read when the file's identity or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        if self._stamp is None:
            raise TokenFileError(f"API_TOKENS_FILE {path} cannot be read")
        self._digests = self._read()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows the symlinks a Kubernetes Secret volume swaps
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read(self) -> tuple[bytes, ...]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"API_TOKENS_FILE {self.path} cannot be read: {type(exc).__name__}") from None
        return parse(text, self.path)

    def digests(self) -> tuple[bytes, ...]:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._digests = self._read()
                        log.info("API tokens reloaded from %s: %d token(s)", self.path, len(self._digests))
                    except TokenFileError as exc:
                        log.error("API tokens not reloaded, keeping the previous %d: %s", len(self._digests), exc)
        return self._digests

    def accepts(self, token: str) -> bool:
        presented = digest(token)
        found = False
        for known in self.digests():  # no early exit: the time does not tell which entry matched
            found |= hmac.compare_digest(presented, known)
        return found


def challenge(error: str | None) -> str:
    return f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")


def init_app(app: Flask, settings: Settings) -> None:
    """Require a bearer token on :data:`PREDICTION_ENDPOINTS` when ``settings.api_tokens_file`` is set."""
    if settings.api_tokens_file is None:
        return
    tokens = TokenFile(settings.api_tokens_file)
    app.extensions["api_tokens"] = tokens
    log.info("API tokens required on the prediction routes: %d token(s) from %s",
             len(tokens.digests()), settings.api_tokens_file)

    def authenticate() -> None:
        if request.endpoint not in PREDICTION_ENDPOINTS:
            return
        header = request.headers.get("Authorization", "")
        bearer = _BEARER.fullmatch(header)
        if bearer is None:
            g.auth_challenge = challenge(None)
            raise Unauthorized("a bearer token is required: Authorization: Bearer <token>")
        if not tokens.accepts(bearer[1]):
            g.auth_challenge = challenge("invalid_token")
            raise Unauthorized("the bearer token is not valid")

    def add_challenge(response: Response) -> Response:
        value = g.get("auth_challenge")
        if value and response.status_code == 401:
            response.headers["WWW-Authenticate"] = value
        return response

    app.before_request(authenticate)
    app.after_request(add_challenge)
