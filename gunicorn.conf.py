"""gunicorn settings for the ride-duration service; plain ``gunicorn`` picks this file up.

Environment knobs gunicorn users already know: ``PORT`` (default 9696) and
``WEB_CONCURRENCY`` (workers, default: the CPUs this process may use, 1–8).
``GUNICORN_CMD_ARGS`` still overrides anything here.
"""

import os

wsgi_app = "predict:app"
bind = [f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '9696')}"]
workers = int(os.environ.get("WEB_CONCURRENCY") or max(1, min(8, len(os.sched_getaffinity(0)))))
worker_class = "sync"

# Load the app (and the model) once in the master: workers share its memory copy-on-write
# and start in milliseconds. Per-worker threads are started by the post_fork hook below.
preload_app = True

timeout = 30            # a sync worker silent this long is killed and replaced
graceful_timeout = 30   # SIGTERM: finish in-flight requests within this (compose stop_grace_period 30s)
keepalive = 5
max_requests = 20000    # recycle workers now and then to bound any slow leak
max_requests_jitter = 2000

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
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# gunicorn >= 25 opens a control socket under $HOME by default: not wanted in containers
# (read-only root, no operator shell). Nothing here uses gunicornc.
control_socket_disable = True


def post_fork(server, worker):
    """Run the app's per-worker start-up callbacks (threads do not survive fork)."""
    app = worker.app.wsgi()  # preloaded: the master's app object, inherited by the fork
    for callback in getattr(app, "extensions", {}).get("post_fork", []):
        callback()


# ---- Prometheus multiprocess mode (ride_duration.web.metrics) ---------------------------------------
# PROMETHEUS_MULTIPROC_DIR comes from the environment (Dockerfile ENV, k8s env; a tmpfs/emptyDir),
# never from Python: prometheus_client chooses its storage when first imported. Every process
# writes <dir>/<type>_<pid>.db; /metrics merges the files on each scrape.
_METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def nworkers_changed(server, new_value, old_value):
    """Empty the metrics directory once per master, *before* the app is preloaded.

    gunicorn 26 imports a preloaded app in Arbiter.setup(), before on_starting/when_ready; the
    first nworkers_changed call (old_value None) is in setup() just ahead of that import. Wiping
    here drops files of a previous run (a restarted container reuses PIDs and an emptyDir
    survives it) and keeps the master's start-up samples (the model load counters).
    """
    if old_value is not None:
        return
    if not _METRICS_DIR:
        if new_value > 1:
            server.log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows one worker's numbers only")
        return
    if os.environ.get("GUNICORN_PID"):
        return  # USR2 binary upgrade: the old master's workers still write here
    os.makedirs(_METRICS_DIR, exist_ok=True)
    for name in os.listdir(_METRICS_DIR):
        if name.endswith(".db"):
            os.unlink(os.path.join(_METRICS_DIR, name))


def when_ready(server):
    """Drop the master's live gauges (model_info set during preload): workers publish their own."""
    if _METRICS_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def child_exit(server, worker):
    """A worker exited (even by SIGKILL): its live gauges go; its counters are folded into the
    archive files so they stay in the totals without one file set per dead worker."""
    if _METRICS_DIR:
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
