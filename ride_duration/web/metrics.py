"""Prometheus metrics: ``GET /metrics``, per-request counters, and the model's life (via holder listeners).

With several gunicorn workers the metrics must be merged across processes: set
``PROMETHEUS_MULTIPROC_DIR`` in the environment (Dockerfile ``ENV`` / k8s env, on a tmpfs). It
has to be set before ``prometheus_client`` is first imported, which picks its storage then.
Every process writes its samples to ``<dir>/<type>_<pid>.db`` and each scrape merges the
files with a fresh collector. ``gunicorn.conf.py`` empties the directory before the app is
preloaded and, on ``child_exit``, calls :func:`process_exited` to fold a dead worker's files
into archive files. The variable is prometheus_client's own, so it is read here rather than
through ``Settings``. Without it, the process's default registry is served (one process:
``flask run``, tests).

Per request the cost is two dict lookups, a counter increment and a histogram observation
(plus two more for prediction requests); registries are only built inside ``/metrics``.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import time
import typing as t

from flask import Blueprint, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .access_log import start_clock

if t.TYPE_CHECKING:
    from flask import Flask

    from ..model.holder import ModelHolder

UNMATCHED = "unmatched"
"""The ``endpoint`` label of requests that matched no route (404, 405): one label, whatever the path."""
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

REQUESTS = Counter("ride_duration_http_requests", "HTTP requests answered, by route rule and status.",
                   ["endpoint", "status"])
LATENCY = Histogram("ride_duration_http_request_duration_seconds",
                    "Time from the first before_request hook to the response, by route rule and status.",
                    ["endpoint", "status"], buckets=LATENCY_BUCKETS)
RIDES = Counter("ride_duration_rides_predicted", "Rides predicted (every prediction endpoint).")
RIDE_WARNINGS = Counter("ride_duration_ride_warnings",
                        "Rides answered with a plausibility warning, by field and reason "
                        "(distance_zero, distance_over_max, distance_beyond_zone_pair).", ["field", "reason"])
BATCH_SIZE = Histogram("ride_duration_batch_size_rides", "Rides per successful prediction request.",
                       buckets=BATCH_BUCKETS)
# livemax: 1 while at least one live worker serves this model. No pid label, so worker recycling
# (max_requests) does not churn series; during a hot swap both versions show 1 until every worker
# has moved. The master's preload-time value is dropped in gunicorn.conf.py (when_ready).
MODEL_INFO = Gauge("ride_duration_model_info", "The serving model: 1 while a live worker serves it, else 0.",
                   ["name", "version", "source"], multiprocess_mode="livemax")
MODEL_EVENTS = Counter("ride_duration_model_events",
                       "Model lifecycle events (model_loaded, model_fallback, model_load_failed, "
                       "model_swapped, model_rejected).", ["event"])
MODEL_REJECTIONS = Counter("ride_duration_model_rejections",
                           "Registry versions refused instead of served, by why (pickle_refused, unsigned, "
                           "bad_signature, digest_mismatch, unsafe_types, invalid).", ["code"])
REGISTRY_CHECKS = Counter("ride_duration_registry_checks", "Registry polls, by outcome.", ["ok"])
# livemin: the stalest live worker, so `time() - this` alerts when any worker's watcher stops.
REGISTRY_LAST_CHECK = Gauge("ride_duration_registry_last_check_timestamp_seconds",
                            "Unix time of the last registry poll, by outcome (oldest across live workers).",
                            ["ok"], multiprocess_mode="livemin")

OVERLOADED = Counter("ride_duration_overloaded_requests",
                     "Requests answered 503 overloaded at once: their worker had MAX_INFLIGHT requests in flight.")
REGISTRY_CHECKED = "registry_checked"
ARCHIVED_KINDS = ("counter", "histogram")
"""Metric files that outlive their process (summed); gauges here are all ``live*`` (deleted)."""
_children: dict[tuple[str, int], tuple[t.Any, t.Any]] = {}


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@contextlib.contextmanager
def directory_lock(directory: str, exclusive: bool) -> t.Iterator[None]:
    """flock on ``<dir>/.lock``: scrapes share it, folding a dead worker's files takes it alone.

    Released by the kernel if the holder dies, so a SIGKILLed worker cannot wedge it.
    """
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class MultiProcessFiles(MultiProcessCollector):
    """``MultiProcessCollector`` minus files a starting worker has created but not sized yet.

    prometheus_client opens a new file, then truncates it to its initial size; a scrape in
    between fails on the empty file (seen twice in ~280 scrapes while workers recycled).
    An empty file holds no samples, so skipping it loses nothing.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path=path)
        self.directory = path

    def collect(self) -> t.Iterable[t.Any]:
        files = []
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            with contextlib.suppress(OSError):
                if os.path.getsize(path) > 0:
                    files.append(path)
        return self.merge(files, accumulate=True)


def scrape() -> tuple[bytes, str]:
    """The exposition text: merged over all processes in multiprocess mode, else this process's."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessFiles(registry, directory)
        with directory_lock(directory, exclusive=False):
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """gunicorn ``child_exit`` (in the master): retire a dead worker's metric files.

    Its live gauges are deleted (``mark_process_dead``). Its counters and histograms are added
    into ``counter_archive.db``/``histogram_archive.db`` and its own files removed, so totals
    keep the dead worker's counts while the directory (a size-limited tmpfs) and the scrape cost
    no longer grow with every ``max_requests`` recycle. Done under the exclusive directory lock:
    a scrape never sees a count twice, not at all, or a file vanish mid-read.
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    directory = multiprocess_dir()
    if not directory:
        return
    with directory_lock(directory, exclusive=True):
        multiprocess.mark_process_dead(pid, directory)
        for kind in ARCHIVED_KINDS:
            dead = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            os.unlink(dead)


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition format."""
    body, content_type = scrape()
    return Response(body, content_type=content_type)


def record(response: Response) -> Response:
    """after_request: count the request, observe its latency and, for predictions, its rides."""
    ctx = g._get_current_object()  # one proxy lookup
    elapsed = time.perf_counter() - ctx.get("request_start", time.perf_counter())
    rule = request.url_rule
    key = (rule.rule if rule is not None else UNMATCHED, response.status_code)
    children = _children.get(key)
    if children is None:
        labels = (key[0], str(key[1]))
        children = _children[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    children[0].inc()
    children[1].observe(elapsed)
    rides = ctx.get("rides")
    if rides:
        RIDES.inc(rides)
        BATCH_SIZE.observe(rides)
        for reason in ctx.get("warnings") or ():
            RIDE_WARNINGS.labels("trip_distance", reason).inc()
    return response


class ModelMetrics:
    """Holder listener: counts model events and keeps ``model_info`` on the serving model."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder
        self.published: tuple[str, str, str] | None = None

    def __call__(self, event: str, **fields: t.Any) -> None:
        if event == REGISTRY_CHECKED:
            ok = "true" if fields.get("ok", True) else "false"
            REGISTRY_CHECKS.labels(ok).inc()
            REGISTRY_LAST_CHECK.labels(ok).set(self.holder.events.get(event, {}).get("at", time.time()))
            return
        MODEL_EVENTS.labels(event).inc()
        if event == "model_rejected":
            MODEL_REJECTIONS.labels(str(fields.get("code") or "invalid")).inc()
        self.publish_model()

    def publish_model(self) -> None:
        """``model_info`` = 1 for the serving model, 0 for the one this process served before."""
        model = self.holder.current
        labels = None if model is None else (str(model.info.get("name", "")), model.version, model.source)
        if labels == self.published:
            return
        if self.published is not None:
            MODEL_INFO.labels(*self.published).set(0)
        if labels is not None:
            MODEL_INFO.labels(*labels).set(1)
        self.published = labels

    def publish_state(self) -> None:
        """post_fork: a forked worker starts with empty samples, so it publishes its own gauges."""
        self.published = None
        self.publish_model()
        last = self.holder.events.get(REGISTRY_CHECKED)
        if last is not None:
            REGISTRY_LAST_CHECK.labels("true" if last.get("ok", True) else "false").set(last["at"])


def init_app(app: Flask, holder: ModelHolder) -> ModelMetrics:
    """Serve ``/metrics``, time every request, and listen to ``holder``.

    Events the holder emitted before this call (the start-up load, once each) are counted from
    ``holder.events``.
    """
    listener = ModelMetrics(holder)
    for event, fields in list(holder.events.items()):
        listener(event, **{k: v for k, v in fields.items() if k != "at"})
    listener.publish_model()
    holder.listeners.append(listener)
    app.extensions.setdefault("post_fork", []).append(listener.publish_state)
    app.extensions["metrics"] = listener
    if start_clock not in app.before_request_funcs.get(None, []):  # shared with logs: one timestamp
        app.before_request(start_clock)
    app.after_request(record)
    app.register_blueprint(bp)
    return listener
