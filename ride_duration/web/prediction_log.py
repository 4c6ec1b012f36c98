"""Sampled prediction log: the rides a worker predicted, as JSON lines, written off the request path.

Off unless ``PREDICTION_LOG_DIR`` is set. For a sampled request (``PREDICTION_LOG_SAMPLE_RATE``)
the request path does one ``random()``, one tuple and one ``queue.put_nowait``; when the
bounded queue (``PREDICTION_LOG_QUEUE`` requests) is full the entry is dropped and counted,
never waited for. One writer thread per worker process (started after the fork; with gevent's
monkey-patching it is a greenlet and the queue is gevent's, which ``put_nowait`` never blocks
either) drains the queue, serialises with orjson and appends to
``<dir>/predictions-<pid>.jsonl``, rotated by :class:`logging.handlers.RotatingFileHandler`
at ``PREDICTION_LOG_MAX_BYTES`` keeping ``PREDICTION_LOG_BACKUPS`` files. One line per ride::

    {"time": "2026-12-01T23:10:00.123Z", "request_id": "...", "endpoint": "/predict",
     "role": "served", "ride_id": "r-17", "model_version": "lin_reg-44c059562705",
     "PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0, "prediction": 26.44}

``ride_id`` is the request's (null without one). With a shadow model (``SHADOW_MODEL_URI``) the
shadow scorer adds, for each shadow-scored ride, a ``"role": "shadow"`` line with the shadow's
prediction and version beside the served ones (``served_prediction``, ``served_model_version``),
through the same queue and writer (:meth:`PredictionLog.shadow`). Shadow lines are written for
every shadow-scored ride (``SHADOW_SAMPLE_RATE``), whatever ``PREDICTION_LOG_SAMPLE_RATE`` is.
A line without ``role`` (older logs) is a served one.

``python -m ride_duration monitor --current <dir>`` reads the served lines of the directory.
Counted in ``ride_duration_prediction_log_records{outcome="written"|"dropped"}`` (rides).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import random
import time
import typing as t
from pathlib import Path

import orjson
from flask import g, request
from prometheus_client import Counter

from ..logs import iso_time
from ..model.background import STOP, Background

if t.TYPE_CHECKING:
    from flask import Flask

    from ..config import Settings

log = logging.getLogger(__name__)

_records: Counter | None = None
BATCH = 500
"""Queue entries written per file write (one write + flush per batch)."""
SERVED, SHADOW = "served", "shadow"
"""The ``role`` of a line: the answer the client got, or the shadow model's prediction of the same ride."""


def records_counter() -> Counter:
    """The counter, registered on first use: with the log off, ``/metrics`` does not show it."""
    global _records
    if _records is None:
        _records = Counter("ride_duration_prediction_log_records", "Rides for the prediction log, by outcome "
                           "(written to the file, or dropped because the writer's queue was full).", ["outcome"])
    return _records


class PredictionLog(Background):
    """``log(rides, predictions, model_version)``: called by the prediction routes after predicting."""

    name = "prediction-log"

    def __init__(self, directory: Path, sample_rate: float, max_bytes: int, backups: int, queue_size: int) -> None:
        super().__init__(queue_size)
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = records_counter().labels("written")
        self.dropped = records_counter().labels("dropped")

    def __call__(self, rides: t.Sequence[t.Mapping[str, t.Any]], predictions: t.Sequence[float],
                 model_version: str) -> None:
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:  # noqa: S311 - log sampling, not a secret
            return
        if self.pid != os.getpid():
            self.start()
        self.put((SERVED, time.time(), g.get("request_id"), request.path, model_version, rides, predictions))

    def shadow(self, context: tuple[float, str | None, str], rides: t.Sequence[t.Mapping[str, t.Any]],
               predictions: t.Sequence[float], version: str, served: t.Sequence[float], served_version: str) -> None:
        """Queue the ``"role": "shadow"`` lines of shadow-scored rides (the shadow scorer's sink, off the
        request path); ``context`` is the request's ``(time, request_id, endpoint)``."""
        if self.pid != os.getpid():
            self.start()
        self.put((SHADOW, *context, version, rides, predictions, served_version, served))

    def put(self, entry: tuple[t.Any, ...]) -> None:
        if not self.offer(entry):
            self.dropped.inc(len(entry[5]))

    def start(self) -> None:
        """Start this process's writer (post_fork; or lazily on first use outside gunicorn)."""
        if self.running_here():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            self.directory / f"predictions-{os.getpid()}.jsonl", maxBytes=self.max_bytes, backupCount=self.backups,
            encoding="utf-8", delay=True)
        handler.terminator = ""  # lines carry their own newlines
        self.launch(handler)

    @staticmethod
    def lines(entry: tuple[t.Any, ...]) -> tuple[bytes, int]:
        role, at, request_id, endpoint, version, rides, predictions, *served = entry
        stamp = iso_time(at)
        if role == SERVED:
            out = b"".join(
                orjson.dumps({"time": stamp, "request_id": request_id, "endpoint": endpoint, "role": role,
                              "ride_id": ride.get("ride_id"), "model_version": version,
                              "PULocationID": ride["PULocationID"], "DOLocationID": ride["DOLocationID"],
                              "trip_distance": ride["trip_distance"], "prediction": value}) + b"\n"
                for ride, value in zip(rides, predictions, strict=True))
            return out, len(rides)
        served_version, served_predictions = served
        out = b"".join(
            orjson.dumps({"time": stamp, "request_id": request_id, "endpoint": endpoint, "role": role,
                          "ride_id": ride.get("ride_id"), "model_version": version, "prediction": value,
                          "served_model_version": served_version, "served_prediction": served_value,
                          "PULocationID": ride["PULocationID"], "DOLocationID": ride["DOLocationID"],
                          "trip_distance": ride["trip_distance"]}) + b"\n"
            for ride, value, served_value in zip(rides, predictions, served_predictions, strict=True))
        return out, len(rides)

    def drain(self, entries: queue.Queue[t.Any], handler: logging.handlers.RotatingFileHandler) -> None:
        stopping = False
        while not stopping:
            batch = [entries.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(entries.get_nowait())
                except queue.Empty:
                    break
            if STOP in batch:
                stopping = True
                batch = [e for e in batch if e is not STOP]
            chunks, count = [], 0
            for entry in batch:
                text, n = self.lines(entry)
                chunks.append(text)
                count += n
            if not count:
                continue
            record = logging.makeLogRecord({"msg": b"".join(chunks).decode()})
            handler.handle(record)  # RotatingFileHandler: roll over if this would pass max_bytes, write, flush
            self.written.inc(count)
        handler.close()


def init_app(app: Flask, settings: Settings) -> PredictionLog | None:
    """When ``PREDICTION_LOG_DIR`` is set, ``app.extensions["prediction_log"]`` is the logger."""
    if settings.prediction_log_dir is None:
        return None
    sink = PredictionLog(settings.prediction_log_dir, settings.prediction_log_sample_rate,
                         settings.prediction_log_max_bytes, settings.prediction_log_backups,
                         settings.prediction_log_queue)
    app.extensions["prediction_log"] = sink
    app.extensions.setdefault("post_fork", []).append(sink.start)
    log.info("prediction log on: %s, sample rate %s", settings.prediction_log_dir,
             settings.prediction_log_sample_rate, extra={"event": "prediction_log_on"})
    return sink
