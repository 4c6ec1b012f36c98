"""Per-request CPU cost of each piece around a prediction, in process: which levers pay.

Builds the app as gunicorn's gevent worker runs it (gevent patched first, bundled model) and
calls the WSGI app directly with one prepared ``POST /predict`` of one ride, timing CPU
(``time.process_time``) over many requests, with one piece removed at a time:

* ``metrics``       the ``after_request`` hook counting and timing the request (ride_duration.web.metrics)
* ``access_log``    the JSON access line (ride_duration.web.access_log), written to /dev/null here
* ``request_id``    ``X-Request-ID`` in and out (ride_duration.web.request_id)
* ``body_deadline`` the middleware reading the body under the pace deadline
* ``all_hooks``     every before/after hook and the middleware at once (what is left is Flask +
                    validation + the model)
* ``merged_hooks``  nothing removed: the three before and three after hooks called from one
                    before and one after hook (what merging them into a pair would save)

Variants are interleaved over ``--rounds`` and the minimum per variant is reported (the least
disturbed round), so other load on the machine inflates numbers less than it does req/s.

    .venv/bin/python bench/levers.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import typing as t
from pathlib import Path

from gevent import monkey

monkey.patch_all()

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RIDE = json.dumps({"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}).encode()


def build() -> t.Any:
    os.environ["MLFLOW_TRACKING_URI"] = ""
    from ride_duration import create_app

    return create_app()


def environ() -> dict[str, t.Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "9696", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(RIDE)), "HTTP_HOST": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(RIDE), "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0)}


def variant(app: t.Any, name: str) -> t.Callable[[], None]:
    """Remove one piece from ``app``; returns the undo."""
    from ride_duration.web import access_log as logs
    from ride_duration.web import body_deadline, metrics, request_id

    before, after = app.before_request_funcs.setdefault(None, []), app.after_request_funcs.setdefault(None, [])
    pieces = {
        "metrics": ([], [metrics.record], False),
        "access_log": ([], [logs.access_line], False),
        "request_id": ([request_id.assign], [request_id.stamp], False),
        "body_deadline": ([], [], True),
        "all_hooks": ([logs.start_clock, request_id.assign, body_deadline.reject_late_body],
                      [metrics.record, logs.access_line, request_id.stamp], True),
    }
    if name == "full":
        return lambda: None
    if name == "merged_hooks":
        saved_lists = (list(before), list(after))
        befores, afters = list(before), list(reversed(after))  # Flask runs after hooks last-registered first

        def one_before() -> t.Any:
            for f in befores:
                rv = f()
                if rv is not None:
                    return rv
            return None

        def one_after(response: t.Any) -> t.Any:
            for f in afters:
                response = f(response)
            return response

        before[:], after[:] = [one_before], [one_after]

        def restore() -> None:
            before[:], after[:] = saved_lists
        return restore
    drop_before, drop_after, unwrap = pieces[name]
    saved = (list(before), list(after), app.wsgi_app)
    before[:] = [f for f in before if f not in drop_before]
    after[:] = [f for f in after if f not in drop_after]
    if unwrap:
        app.wsgi_app = app.wsgi_app.app

    def undo() -> None:
        before[:], after[:] = saved[0], saved[1]
        app.wsgi_app = saved[2]
    return undo


def measure(app: t.Any, n: int) -> float:
    """CPU µs per request over ``n`` requests."""
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> None:
        assert status.startswith("200"), status

    envs = [environ() for _ in range(n)]
    t0 = time.process_time()
    for env in envs:
        for _ in app(env, start_response):
            pass
    return (time.process_time() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    app = build()
    names = ["full", "metrics", "access_log", "request_id", "body_deadline", "all_hooks", "merged_hooks"]
    best: dict[str, float] = {}
    with open(os.devnull, "w") as devnull:
        real_stdout, sys.stdout = sys.stdout, devnull  # the access line goes to /dev/null
        try:
            measure(app, 2000)  # warm-up
            for _ in range(args.rounds):
                for name in names:
                    undo = variant(app, name)
                    try:
                        us = measure(app, args.requests)
                    finally:
                        undo()
                    best[name] = min(best.get(name, us), us)
        finally:
            sys.stdout = real_stdout
    full = best["full"]
    print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.requests} requests x "
          f"{args.rounds} rounds, min per variant")
    print("| variant | CPU µs per request | saving vs full |\n|---|---|---|")
    for name in names:
        label = {"full": "as shipped", "merged_hooks": "hooks merged into one before/after pair"}.get(
            name, f"without {name}")
        print(f"| {label} | {best[name]:.1f} | {full - best[name]:+.1f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
