"""Shadow scoring: a second model scores a sampled share of the served rides, off the response path.

The caller (a prediction endpoint's tail, the stream consumer's batch) hands
:meth:`ShadowScorer.submit` the rides it just answered, their served predictions and version,
and a context of its own (the web: ``(time, request_id, endpoint)``). ``submit`` costs one
``random()`` and one ``queue.put_nowait``: a full queue (``SHADOW_QUEUE`` submissions) drops
and counts, never waits. One scorer thread per process (started after the fork; under gevent's
monkey-patching it is a greenlet) drains the queue, predicts everything queued in one model call,
and passes each submission's result to the ``sink`` (the prediction log's shadow lines, or the
stream's shadow topic). A shadow with a compiled fast path costs microseconds per ride and is
called in the scorer's greenlet; any other model runs in gevent's native thread pool, so that even
a CPU-bound shadow cannot hold the worker's event loop. A shadow model that raises is
counted and logged (rate-limited); one that is slow only lets its queue fill up.

The model comes from a :class:`~ride_duration.model.holder.ModelHolder` that a registry watcher
keeps current (``SHADOW_MODEL_URI``, the same watcher, checks and refusals as the served model:
:func:`ride_duration.startup.follow_shadow`).

Metrics (registered on first use, so they exist only with a shadow):

* ``ride_duration_shadow_rides_total{served_version, shadow_version}``: rides the shadow scored;
* ``ride_duration_shadow_abs_diff_minutes_total{served_version, shadow_version}``: the sum of
  ``|served - shadow|`` over them; the running mean absolute difference is the ratio,
  ``rate(..._abs_diff_minutes_total[5m]) / rate(..._rides_total[5m])``;
* ``ride_duration_shadow_errors_total{shadow_version}``: rides the shadow model failed on;
* ``ride_duration_shadow_dropped_rides_total{reason}``: rides not shadow-scored: ``queue_full``,
  ``no_model`` (no shadow model loaded), ``sink_failed`` (scored, but the sink refused the result).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import time
import typing as t

from .background import STOP, Background

if t.TYPE_CHECKING:
    from prometheus_client import Counter

    from .holder import ModelHolder

log = logging.getLogger(__name__)

BATCH_RIDES = 2000
"""Rides predicted per shadow model call (submissions are never split)."""
ERROR_LOG_EVERY = 60.0
"""Seconds between two log lines about a failing shadow model (the counter has every failure)."""


@dataclasses.dataclass(frozen=True)
class ShadowResult:
    """One submission, shadow-scored."""

    context: t.Any
    rides: t.Sequence[t.Mapping[str, t.Any]]
    predictions: list[float]
    version: str
    served: t.Sequence[float]
    served_version: str


Sink = t.Callable[[ShadowResult], None]


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter

        pair = ["served_version", "shadow_version"]
        self.rides: Counter = Counter("ride_duration_shadow_rides", "Rides the shadow model scored, by the "
                                      "(served, shadow) version pair.", pair)
        self.abs_diff: Counter = Counter(
            "ride_duration_shadow_abs_diff_minutes", "Sum of |served - shadow| predictions (minutes), by version "
            "pair; divided by ride_duration_shadow_rides_total it is the mean absolute difference.", pair)
        self.errors: Counter = Counter("ride_duration_shadow_errors", "Rides the shadow model failed on "
                                       "(it raised or gave the wrong number of predictions).", ["shadow_version"])
        self.dropped: Counter = Counter("ride_duration_shadow_dropped_rides", "Sampled rides the shadow did not "
                                        "score (queue_full, no_model) or whose result was lost (sink_failed).",
                                        ["reason"])


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    """The shadow counters, registered on first use: without a shadow, ``/metrics`` does not show them."""
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def native_runner() -> t.Callable[..., t.Any] | None:
    """Under gevent's monkey-patching, a way to run a call in gevent's native thread pool (the calling
    greenlet waits; the worker's other greenlets run, the GIL is shared by switch interval); else None."""
    try:
        import gevent
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency of the service
        return None
    if not monkey.is_module_patched("threading"):
        return None

    def run(fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        ok, value = gevent.get_hub().threadpool.apply(_outcome, (fn, *args))
        if not ok:
            raise value  # here, not in the pool: gevent's hub would print the pool's exception
        return value

    return run


def _outcome(fn: t.Callable[..., t.Any], *args: t.Any) -> tuple[bool, t.Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed back to the scorer, which counts it
        return False, exc


class ShadowScorer(Background):
    """``submit(rides, served, served_version, context)`` on the served path; the scoring happens in a
    thread of its own (one per process) that hands every result to ``sink``."""

    name = "shadow-scorer"

    def __init__(self, holder: ModelHolder, sample_rate: float, queue_size: int, sink: Sink | None = None,
                 uri: str | None = None) -> None:
        super().__init__(queue_size)
        self.holder = holder
        self.uri = uri
        self.sample_rate = sample_rate
        self.sink = sink
        self.metrics = metrics()
        self._dropped_full = self.metrics.dropped.labels("queue_full")
        self._last_error_log: dict[str, float] = {}
        self._run: t.Callable[..., t.Any] | None = None
        self._pairs: dict[tuple[str, str], tuple[t.Any, t.Any]] = {}  # (served, shadow) -> their counters

    # ---- the served path ------------------------------------------------------------------------------

    def submit(self, rides: t.Sequence[t.Mapping[str, t.Any]], served: t.Sequence[float], served_version: str,
               context: t.Any = None) -> None:
        """Queue a sampled submission for the shadow; never waits (a full queue drops and counts)."""
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:  # noqa: S311 - sampling, not a secret
            return
        if self.pid != os.getpid():
            self.start()
        if not self.offer((rides, served, served_version, context)):
            self._dropped_full.inc(len(rides))

    # ---- the scorer thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's scorer (post_fork; or lazily on first use)."""
        if self.running_here():
            return
        self._run = native_runner()
        self.launch()

    def drain(self, entries: queue.Queue[t.Any], *args: t.Any) -> None:
        while True:
            batch = [entries.get()]
            rides = len(batch[0][0]) if batch[0] is not STOP else 0
            while rides < BATCH_RIDES:
                try:
                    entry = entries.get_nowait()
                except queue.Empty:
                    break
                batch.append(entry)
                rides += len(entry[0]) if entry is not STOP else 0
            stopping = any(entry is STOP for entry in batch)
            work = [entry for entry in batch if entry is not STOP]
            if work:
                try:
                    self.score(work)
                except Exception:  # noqa: BLE001 - the scorer must outlive any surprise
                    log.exception("shadow scorer: unexpected error")
            if stopping:
                return
            time.sleep(0)  # under gevent: the worker's requests get their turn between batches

    def score(self, batch: list[tuple[t.Any, ...]]) -> None:
        """One model call for every queued submission; metrics and the sink per submission."""
        n = sum(len(rides) for rides, *_ in batch)
        model = self.holder.current
        if model is None:
            self.metrics.dropped.labels("no_model").inc(n)
            return
        rides = [ride for entry in batch for ride in entry[0]]
        # a compiled fast path costs microseconds per ride (bounded, like the served path's slices): called
        # here; a general (scikit-learn) model may take any time, so it runs in a native thread under gevent
        native = self._run if model.fast is None else None
        try:
            predictions = native(model.predict, rides) if native is not None else model.predict(rides)
            if len(predictions) != n:
                raise ValueError(f"{len(predictions)} predictions for {n} rides")
        except Exception as exc:  # noqa: BLE001 - any failure of the shadow is counted, never raised
            self.metrics.errors.labels(model.version).inc(n)
            self.log_error(model.version, exc)
            return
        start = 0
        for entry_rides, served, served_version, context in batch:
            part = predictions[start:start + len(entry_rides)]
            start += len(entry_rides)
            counted = self._pairs.get((served_version, model.version))
            if counted is None:
                counted = self._pairs[(served_version, model.version)] = (
                    self.metrics.rides.labels(served_version, model.version),
                    self.metrics.abs_diff.labels(served_version, model.version))
            counted[0].inc(len(part))
            counted[1].inc(sum(abs(a - b) for a, b in zip(served, part, strict=True)))
            if self.sink is None:
                continue
            try:
                self.sink(ShadowResult(context, entry_rides, part, model.version, served, served_version))
            except Exception as exc:  # noqa: BLE001 - a failing sink costs the shadow result, nothing else
                self.metrics.dropped.labels("sink_failed").inc(len(part))
                self.log_error(model.version, exc, "shadow sink failed")

    def log_error(self, version: str, exc: BaseException, what: str = "shadow model failed") -> None:
        now = time.monotonic()
        if now - self._last_error_log.get(what, -ERROR_LOG_EVERY) >= ERROR_LOG_EVERY:
            self._last_error_log[what] = now
            log.warning("%s (%s), answers are unaffected: %s: %s", what, version, type(exc).__name__,
                        str(exc)[:200], extra={"event": "shadow_failed", "shadow_version": version})

    # ---- what /ready shows -----------------------------------------------------------------------------

    def state(self) -> dict[str, t.Any]:
        """``{"status", "model_version", "uri", "sample_rate", "reason"?, "refused"?}``: ``scoring`` once a
        model is loaded, else ``unavailable`` with the reason (registry down, the version refused)."""
        holder = self.holder
        model = holder.current
        body: dict[str, t.Any] = {"status": "unavailable" if model is None else "scoring",
                                  "model_version": None if model is None else model.version,
                                  "uri": self.uri, "sample_rate": self.sample_rate}
        if model is None:
            body["reason"] = holder.reason
        if holder.refused:
            body["refused"] = list(holder.refused.values())
        return body
