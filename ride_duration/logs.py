"""JSON-lines logging on stdout for every process: the service, gunicorn and the offline jobs.

Every record is one JSON object on one line: ``time`` (UTC, ISO 8601, ms), ``level``,
``logger``, ``message``, ``pid``, then the record's ``extra`` fields (``event``,
``model_version``, …) and ``exc_info`` as one escaped string. gunicorn's own log uses the same
formatter through ``logconfig_dict`` in ``gunicorn.conf.py``; its access log stays off because
:func:`ride_duration.web.access_log.access_line` writes it in the same shape.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import typing as t

import orjson
from pythonjsonlogger.core import BaseJsonFormatter

_second: tuple[int, str] = (-1, "")


def iso_time(created: float) -> str:
    """``2026-11-22T08:30:00.123Z`` (the strftime part is cached per second)."""
    global _second
    whole = int(created)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int((created - whole) * 1000):03d}Z"


def dumps(body: dict[str, t.Any]) -> str:
    try:
        return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits
        return json.dumps(body, default=str)


class JsonFormatter(BaseJsonFormatter):
    """python-json-logger, serialised by :func:`dumps`: ``time``, ``level``, ``logger``, ``message``,
    ``pid``, then the record's extras (``exc_info`` as text)."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(
            ["levelname", "name", "message", "process"],
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        )

    def add_fields(self, log_data: dict[str, t.Any], record: logging.LogRecord,
                   message_dict: dict[str, t.Any]) -> None:
        log_data["time"] = iso_time(record.created)  # the access line's format, cached per second
        super().add_fields(log_data, record, message_dict)

    def jsonify_log_record(self, log_data: dict[str, t.Any]) -> str:
        return dumps(log_data)  # orjson, with a stdlib fallback for what orjson refuses


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler on whatever ``sys.stdout`` is at emit time (survives stdout being swapped)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> t.TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: t.Any) -> None:
        pass


def setup_logging(level: str | int = "INFO") -> None:
    """Make the root logger write JSON lines to stdout (idempotent).

    If a JSON handler is already on the root logger (gunicorn's ``logconfig_dict``), only the
    level is set, so no line is written twice. Python warnings are routed through logging too.
    """
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
