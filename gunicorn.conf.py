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

accesslog = None        # the app writes one JSON line per request (ride_duration.logs)
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

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
