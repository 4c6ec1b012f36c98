"""gunicorn settings for the ride-duration service; plain ``gunicorn`` picks this file up.

Environment knobs gunicorn users already know: ``PORT`` (default 9696) and
``WEB_CONCURRENCY`` (workers, default: the CPUs this process may use, 1–8).
``GUNICORN_CMD_ARGS`` still overrides anything here. The connection deadlines and limits are
Settings fields (ride_duration/config.py, docs/hardening.md): ``HEADER_TIMEOUT``,
``KEEPALIVE_TIMEOUT``, ``BODY_TIMEOUT``, ``BODY_MIN_RATE``, ``SEND_TIMEOUT``,
``WORKER_CONNECTIONS``, ``LIMIT_REQUEST_LINE``, ``LIMIT_REQUEST_FIELDS``, ``LIMIT_REQUEST_FIELD_SIZE``.

Worker model: gevent (chosen by measurement, docs/hardening.md). A slow or hostile client
holds a greenlet, not a worker. gevent must patch the standard library before the app is
preloaded (the registry watcher's threads become greenlets, the MLflow client's sockets
cooperative), so this file patches at its top when the worker class in effect is a gevent one;
``-k sync`` (or ``GUNICORN_CMD_ARGS="-k sync"``) still gives the old sync workers, unpatched.
"""

import os
import shlex
import shutil
import signal
import sys
import tempfile

DEFAULT_WORKER_CLASS = "ride_duration.web.worker.GeventWorker"


def _worker_class_in_effect(default: str) -> str:
    """The worker class gunicorn will use: ``-k`` on the command line or in GUNICORN_CMD_ARGS wins
    over this file, so read them with gunicorn's own parser (this file runs before they apply)."""
    from gunicorn.config import Config

    parser = Config().parser()
    chosen = default
    for argv in (shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "")), sys.argv[1:]):
        with_class = [a for a in argv if a.startswith(("-k", "--worker-class"))]
        if with_class:
            chosen = parser.parse_known_args(argv)[0].worker_class or chosen
    return chosen


if "gevent" in _worker_class_in_effect(DEFAULT_WORKER_CLASS).lower():
    import warnings

    from gevent import monkey

    with warnings.catch_warnings():  # gunicorn imported ssl before any config file can run
        warnings.filterwarnings("ignore", category=monkey.MonkeyPatchWarning)
        monkey.patch_all()

from ride_duration.config import Settings  # noqa: E402 - after the patch; pydantic only, not the app

_settings = Settings()

wsgi_app = "predict:app"
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '9696')}"]  # noqa: S104 - in a container the port must listen on its interfaces; HOST=127.0.0.1 narrows it
workers = int(os.environ.get("WEB_CONCURRENCY") or max(1, min(8, len(os.sched_getaffinity(0)))))
worker_class = DEFAULT_WORKER_CLASS

# Load the app (and the model) once in the master: workers share its memory copy-on-write
# and start in milliseconds. Per-worker threads are started by the post_fork hook below.
preload_app = True

timeout = 30            # a worker whose loop is silent this long is killed and replaced
graceful_timeout = 30   # SIGTERM: finish in-flight requests within this (compose stop_grace_period 30s)
# Recycle workers now and then to bound any slow leak. 1,000,000 (± 100,000, so workers do not
# leave together): ~7 min at the measured peak of ~2,300 req/s per worker, days at ordinary load.
# 20,000 recycled both workers inside a 10 s bench point; make soak (5 min at c8, recycling off)
# shows RSS flat (+0.7 %), so a slow leak is not what this guards against first.
max_requests = 1_000_000
max_requests_jitter = 100_000

# Connections (docs/hardening.md). HEADER_TIMEOUT and SEND_TIMEOUT are applied by the worker class
# (ride_duration.web.worker), the body deadline by the app (ride_duration.web.body_deadline).
keepalive = _settings.keepalive_timeout
worker_connections = _settings.worker_connections
limit_request_line = _settings.limit_request_line
limit_request_fields = _settings.limit_request_fields
limit_request_field_size = _settings.limit_request_field_size

accesslog = None        # the app writes one JSON line per request (ride_duration.web.access_log)
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn's own messages as JSON lines on stdout, same formatter as the app (ride_duration.logs):
# the root logger gets the one handler; gunicorn.error propagates to it.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "ride_duration.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"level": loglevel.upper(), "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}

# heartbeat files on tmpfs (gunicorn FAQ), not on the container's disk or a read-only root
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None  # noqa: S108 - a directory for gunicorn's heartbeat files (its FAQ), not a file name

# gunicorn >= 25 opens a control socket under $HOME by default: not wanted in containers
# (read-only root, no operator shell). Nothing here uses gunicornc.
control_socket_disable = True


def post_fork(server, worker):
    """Run the app's per-worker start-up callbacks (threads do not survive fork).

    First, a stop signal must end a worker that is still starting: until gunicorn's
    ``init_signals`` (after this hook) the worker has the master's inherited handler, which only
    queues the signal for a master that is not there. The signal was lost, the new worker served
    on and the master waited its whole ``graceful_timeout`` for it (a pod stopped just after a
    worker was recycled took 30 s). A worker that serves nothing yet has nothing to drain.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    app = worker.app.wsgi()  # preloaded: the master's app object, inherited by the fork
    for callback in getattr(app, "extensions", {}).get("post_fork", []):
        callback()


# ---- Prometheus multiprocess mode (ride_duration.web.metrics) -----------------------------------
# PROMETHEUS_MULTIPROC_DIR comes from the environment (Dockerfile ENV, k8s env; a tmpfs/emptyDir).
# When it is absent (make serve, a bare gunicorn), the master creates a private directory and
# sets the variable before the app is preloaded, so /metrics adds up across workers anyway; the
# directory is removed when the master exits. prometheus_client chooses its storage when first
# imported (at preload), never later. Every process writes <dir>/<type>_<pid>.db; /metrics
# merges the files on each scrape.
PRIVATE_METRICS_PREFIX = "ride-duration-metrics-"


def _metrics_dir():
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _private_metrics_dir():
    """The metrics directory if this master created it (its pid is in the name), else None."""
    directory = _metrics_dir()
    mine = f"{PRIVATE_METRICS_PREFIX}{os.getpid()}-"
    if directory and os.path.basename(directory.rstrip("/")).startswith(mine):
        return directory
    return None


def nworkers_changed(server, new_value, old_value):
    """Prepare the metrics directory once per master, *before* the app is preloaded.

    gunicorn 26 imports a preloaded app in Arbiter.setup(), before on_starting/when_ready; the
    first nworkers_changed call (old_value None) is in setup() just ahead of that import. A set
    directory is emptied (files of a previous run: a restarted container reuses PIDs and an
    emptyDir survives it); an unset one is created privately. Either way the master's start-up
    samples (the model load counters) are kept.
    """
    if old_value is not None:
        return
    if os.environ.get("GUNICORN_PID"):
        return  # USR2 binary upgrade: the old master's workers still write here
    directory = _metrics_dir()
    if not directory:
        directory = tempfile.mkdtemp(prefix=f"{PRIVATE_METRICS_PREFIX}{os.getpid()}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        server.log.info("PROMETHEUS_MULTIPROC_DIR not set: metrics of all workers merged in %s", directory)
        return
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def when_ready(server):
    """Drop the master's live gauges (model_info set during preload): workers publish their own."""
    if _metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def on_exit(server):
    """The master is leaving: remove the metrics directory it created for itself (if it did)."""
    directory = _private_metrics_dir()
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def child_exit(server, worker):
    """A worker exited (even by SIGKILL): its live gauges go; its counters are folded into the
    archive files so they stay in the totals without one file set per dead worker."""
    if _metrics_dir():
        try:
            from ride_duration.web.metrics import process_exited

            process_exited(worker.pid)
        except Exception:  # an exception here would stop the master; metrics must not do that
            server.log.exception("could not retire metric files of worker %s", worker.pid)


def worker_exit(server, worker):
    """A booted worker leaving cleanly (max_requests, SIGHUP, SIGTERM) skips the interpreter's teardown.

    Freeing the preloaded heap object by object writes to every copy-on-write page it shares
    with the master: ~0.5 s of CPU and ~110 MB of page copies per exiting worker, taken from the
    workers still serving (and 4-5 s added to a SIGTERM). atexit handlers still run and stdout
    and stderr are flushed; exits with an error code (boot failures) keep gunicorn's own path.
    """
    import atexit
    import sys

    exc = sys.exc_info()[1]
    if worker.booted and isinstance(exc, SystemExit) and exc.code in (0, None):
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)
