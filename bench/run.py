"""Benchmark the service against today's sync config, the course-style app and a Flask floor, in one run.

Every server runs on its own free 127.0.0.1 port with the same number of workers:

* ``service``          ``predict:app`` under the production ``gunicorn.conf.py`` (gevent worker,
                       the default; plus ``service-registry`` when ``MLFLOW_TRACKING_URI`` is set)
* ``service-sync``     the same app and config with ``-k sync``: the worker model before issue 10
* ``service-gthread``  (``--only``) the same with ``-k gthread --threads 8``
* ``course``           bench/baselines/course_app.py under plain default gunicorn: per request
                       ``dv.transform`` + ``predict``
* ``flask-const``      bench/baselines/flask_const.py under plain default gunicorn (sync, default
                       settings, ``-w`` and ``--bind`` only): ``get_json`` + ``jsonify`` a constant,
                       what a user would otherwise run
* ``wsgi-const``       (``--only``) a bare WSGI callable, plain default gunicorn
* ``service-shadow-off`` / ``service-shadow-on`` (full runs; ``--only`` in smoke) the service serving a
                       registry model without and with a shadow model at ``SHADOW_SAMPLE_RATE=1.0``
                       (bench/shadow.py starts the registry): the cost of shadow scoring, judged as
                       c1 p50 and c8 req/s within 10 % of shadow off

Load comes from wrk (Debian package ``wrk``; installed with apt-get when missing and root),
POSTing one ride through a Lua script; a warm-up run is discarded before each point. Points:
``c1`` and ``c8`` on keep-alive connections, ``c8close`` with ``Connection: close`` (a new
connection per request), and the 10,000-ride batch (N sequential requests on one keep-alive
connection), and for this service ``mixed``: single rides (wrk -c1) while two keep-alive
connections stream 10,000-ride batches (wrk -c2). Then one slow-client row per service server:
256 idle keep-alive + 64 trickling connections held open (bench/hostile.py) while a polite
client POSTs a ride every 0.1 s.
Output: a markdown table on stdout, and JSON + markdown under bench/results/. ``--smoke``
makes every point tiny and judges no target (``make test`` runs it so the script cannot rot).

    .venv/bin/python bench/run.py            # full: 5 s per point after 1 s warm-up, 2 interleaved rounds (~4 min)
    .venv/bin/python bench/run.py --smoke    # ~30 s, structure only
    flock /tmp/bench.lock .venv/bin/python bench/run.py   # on a shared machine
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench.hostile must import
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
POINTS = ("c1", "c8", "c8close", "batch", "mixed")
RIDE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}

SERVICE_READY = "/ready"
SERVERS: dict[str, dict[str, t.Any]] = {
    "service": {"app": "predict:app", "ready": SERVICE_READY, "config": "production", "args": [],
                "label": "this service: gevent (default gunicorn.conf.py)"},
    "service-sync": {"app": "predict:app", "ready": SERVICE_READY, "config": "production", "args": ["-k", "sync"],
                     "label": "this service: sync (gunicorn.conf.py -k sync, before issue 10)"},
    "service-gthread": {"app": "predict:app", "ready": SERVICE_READY, "config": "production",
                        "args": ["-k", "gthread", "--threads", "8"],
                        "label": "this service: gthread 8 threads (gunicorn.conf.py -k gthread)"},
    "service-stock-gevent": {"app": "predict:app", "ready": SERVICE_READY, "config": "production",
                             "args": ["-k", "gevent"],
                             "label": "this service: gunicorn's stock gevent worker (no fair turn; before issue 22)"},
    "course": {"app": "bench.baselines.course_app:app", "ready": "/health", "config": "plain", "args": [],
               "label": "course-style app (dv.transform + predict), plain gunicorn"},
    "flask-const": {"app": "bench.baselines.flask_const:app", "ready": "/health", "config": "plain", "args": [],
                    "label": "Flask constant (get_json + jsonify), plain gunicorn"},
    "wsgi-const": {"app": "bench.baselines.wsgi_const:app", "ready": "/health", "config": "plain", "args": [],
                   "label": "bare WSGI constant, plain gunicorn"},
}
SHADOW_SERVERS = ("service-shadow-off", "service-shadow-on")
SERVERS.update({key: {"app": "predict:app", "ready": SERVICE_READY, "config": "production", "args": [],
                      "label": f"this service, registry model, shadow {'on (SHADOW_SAMPLE_RATE=1.0)' if on else 'off'}"}
                for key, on in zip(SHADOW_SERVERS, (False, True), strict=True)})
DEFAULT_SERVERS = ("service", "service-sync", "course", "flask-const")
FULL_SERVERS = (*DEFAULT_SERVERS, *SHADOW_SERVERS)
"""What a full run (not ``--smoke``) measures: the smoke skips the shadow pair (it needs a registry)."""
SLOW_CLIENTS = [("idle", 256), ("headers", 32), ("body", 32)]
"""The slow-client row: 256 idle keep-alive + 64 trickling (headers and body) connections."""

WRK_LUA = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
%s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write("WRKJSON ", string.format(
    '{"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean), "\\n")
end
"""


# ---------------------------------------------------------------- environment

def ensure_wrk() -> str:
    """Path to wrk; installs Debian's package when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True, check=False)
        found = shutil.which("wrk")
    if not found:
        sys.exit("wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)")
    return found


def machine() -> dict[str, t.Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("flask", "gunicorn", "orjson", "numpy", "scikit-learn", "pydantic", "prometheus-client"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    wrk_version = subprocess.run([shutil.which("wrk") or "wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(), "cpu": cpu or platform.processor(), "kernel": platform.release(),
        "python": platform.python_version(), "versions": versions,
        "wrk": wrk_version.split("[")[0].strip(), "loadavg_start": os.getloadavg(), "nice": os.nice(0),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- servers

class Gunicorn:
    """One gunicorn master under the production config, serving ``app`` on a free loopback port."""

    def __init__(self, name: str, app: str, ready: str, workers: int, env: dict[str, str] | None = None,
                 log_dir: Path | None = None, config: str = "production", args: t.Sequence[str] = ()) -> None:
        self.name, self.app, self.ready_path = name, app, ready
        self.port = free_port()
        if config == "plain":  # gunicorn's defaults: no config file, sync, no keep-alive, 30 s timeout
            self.args = ["-c", "/dev/null", "-w", str(workers), "--bind", f"127.0.0.1:{self.port}", *args]
        else:
            self.args = ["-c", str(ROOT / "gunicorn.conf.py"), *args]
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(workers),
                    "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"bench-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self, timeout: float = 60.0) -> Gunicorn:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps it
        t0 = time.monotonic()
        self.proc = subprocess.Popen([GUNICORN, *self.args, self.app], cwd=ROOT,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: gunicorn exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", self.ready_path)
                if conn.getresponse().status == 200:
                    self.startup_s = time.monotonic() - t0
                    conn.close()
                    return self
                conn.close()
            time.sleep(0.01)
        raise TimeoutError(f"{self.name}: not ready in {timeout}s")

    def requests_by_worker(self, since: int) -> tuple[list[int], int]:
        """Access-log lines per worker pid after byte offset ``since`` (sorted, largest first), and
        the new offset: how evenly the workers shared a point (this service's log only)."""
        counts: dict[int, int] = {}
        with open(self.log_path, "rb") as log:
            log.seek(since)
            for line in log:
                if b'"event":"request"' in line:
                    pid = json.loads(line).get("pid")
                    counts[pid] = counts.get(pid, 0) + 1
            return sorted(counts.values(), reverse=True), log.tell()

    def workers(self) -> list[int]:
        assert self.proc is not None
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        """CPU seconds used by master and workers so far, workers that already exited included.

        Robust to load from elsewhere on the machine, unlike req/s: the cost of a request.
        """
        assert self.proc is not None
        total = proc_cpu(self.proc.pid, children=True)  # + reaped workers (cutime, cstime)
        return total + sum(proc_cpu(pid) for pid in self.workers())

    def memory(self) -> dict[str, t.Any]:
        """PSS and private (USS) memory in MiB of master and workers, from /proc/<pid>/smaps_rollup."""
        assert self.proc is not None
        master = smaps(self.proc.pid)
        workers = [smaps(pid) for pid in self.workers()]
        return {
            "master_pss_mb": master["pss"], "worker_pss_mb": [w["pss"] for w in workers],
            "worker_private_mb": [w["private"] for w in workers],
            "total_pss_mb": round(master["pss"] + sum(w["pss"] for w in workers), 1),
            "max_worker_pss_mb": max((w["pss"] for w in workers), default=None),
            # what one more worker adds to the total PSS: its private pages (the shared ones are
            # already counted); robust to other processes on the box mapping the same libraries
            "extra_worker_mb": max((w["private"] for w in workers), default=None),
        }

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(35)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def proc_cpu(pid: int, children: bool = False) -> float:
    """utime + stime (+ cutime + cstime) of ``pid`` in seconds, from /proc/<pid>/stat; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def smaps(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    private = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return {"pss": round(fields.get("Pss", 0.0), 1), "private": round(private, 1)}


# ---------------------------------------------------------------- load

def wrk_point(wrk: str, lua: Path, port: int, conns: int, seconds: float, warmup: float,
              cpu: t.Callable[[], float] | None = None, path: str = "/predict") -> dict[str, t.Any]:
    """One wrk run after a discarded warm-up; req/s, latency percentiles (ms), errors, and (given
    ``cpu``, the server's CPU seconds so far) the server's CPU time per request."""
    url = f"http://127.0.0.1:{port}{path}"
    base = [wrk, "-t1", f"-c{conns}", "-s", str(lua), "--timeout", "5s"]
    if warmup > 0:
        subprocess.run([*base, f"-d{max(1, round(warmup))}s", url], capture_output=True, text=True, timeout=60)
    cpu_before = cpu() if cpu else 0.0
    out = subprocess.run([*base, f"-d{max(1, round(seconds))}s", url], capture_output=True, text=True,
                         timeout=seconds + 60)
    cpu_used = cpu() - cpu_before if cpu else None
    point = wrk_summary(out)
    point["cpu_us_per_req"] = (round(cpu_used / point["requests"] * 1e6, 1)
                               if cpu_used and point["requests"] else None)
    return point


def batch_point(port: int, body: bytes, n: int, warmup: int) -> dict[str, t.Any]:
    """N sequential 10,000-ride POSTs on one keep-alive connection; client-side latency."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    times, errors, size = [], 0, 0
    for i in range(warmup + n):
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            ok = 200 <= resp.status < 300
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            ok, data = False, b""
        elapsed = time.perf_counter() - t0
        if i >= warmup:
            times.append(elapsed * 1000)
            errors += not ok
            size = len(data)
    conn.close()
    times.sort()
    return {"requests": n, "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 2),
            "errors": errors, "response_bytes": size}


def wrk_summary(out: subprocess.CompletedProcess[str]) -> dict[str, t.Any]:
    """The numbers of one wrk run (the ``WRKJSON`` line ``WRK_LUA`` prints)."""
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line.split(" ", 1)[1])
    secs = raw["duration_us"] / 1e6
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {"rps": round(raw["requests"] / secs, 1), "requests": raw["requests"], "seconds": round(secs, 2),
            "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "errors": raw["status"] + socket_errors,
            "non2xx": raw["status"], "socket_errors": socket_errors}


def mixed_point(wrk: str, lua_single: Path, lua_batch: Path, port: int, seconds: float) -> dict[str, t.Any]:
    """Single rides (wrk -c1) while two keep-alive connections stream 10,000-ride batches (wrk -c2),
    both for ``seconds``: does a batch hold the single rides of its worker?"""
    url = f"http://127.0.0.1:{port}/predict"
    secs = f"-d{max(1, round(seconds))}s"
    batch = subprocess.Popen([wrk, "-t1", "-c2", "-s", str(lua_batch), "--timeout", "10s", secs, url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the batch streams are running before the single rides are measured
    single = subprocess.run([wrk, "-t1", "-c1", "-s", str(lua_single), "--timeout", "5s", secs, url],
                            capture_output=True, text=True, timeout=seconds + 60)
    out, err = batch.communicate(timeout=seconds + 60)
    streams = wrk_summary(subprocess.CompletedProcess(batch.args, batch.returncode, out, err))
    single_row = wrk_summary(single)
    single_row["errors"] += streams["errors"]
    return {**single_row, "batch_rps": streams["rps"], "batch_p50_ms": streams["p50_ms"],
            "batch_p99_ms": streams["p99_ms"], "batch_errors": streams["errors"]}


def batch_body(n: int = 10_000) -> bytes:
    import random

    rng = random.Random(7)
    rides = [{"PULocationID": rng.randint(1, 265), "DOLocationID": rng.randint(1, 265),
              "trip_distance": round(rng.uniform(0.1, 30), 2)} for _ in range(n)]
    return json.dumps(rides).encode()


# ---------------------------------------------------------------- targets and report

def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def judge(res: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """The issue's targets, each with the measured value and met/missed."""
    s, c, f = (res["servers"].get(k, {}) for k in ("service", "course", "flask-const"))
    off, on = (res["servers"].get(k, {}) for k in SHADOW_SERVERS)

    def get(d: dict[str, t.Any], *path: str) -> t.Any:
        for p in path:
            d = (d or {}).get(p)  # type: ignore[assignment]
        return d

    slow = s.get("slow_clients") or {}
    rows = [
        ("single ride c8 req/s >= 1.0x Flask floor (plain gunicorn)", ratio(get(s, "c8", "rps"), get(f, "c8", "rps")),
         1.0, ">="),
        ("(noise-robust view of the line above) c8 server CPU per request <= 1.0x Flask floor's",
         ratio(get(s, "cpu_us_per_req", "c8"), get(f, "cpu_us_per_req", "c8")), 1.0, "<="),
        ("single ride c8 req/s >= 2.0x course app", ratio(get(s, "c8", "rps"), get(c, "c8", "rps")), 2.0, ">="),
        ("(noise-robust view of the line above) course app's c8 server CPU per request >= 2.0x service's",
         ratio(get(c, "cpu_us_per_req", "c8"), get(s, "cpu_us_per_req", "c8")), 2.0, ">="),
        ("single ride c8 p99 <= 2.5 ms", get(s, "c8", "p99_ms"), 2.5, "<="),
        ("single ride c8 p99 <= Flask floor's c8 p99", ratio(get(s, "c8", "p99_ms"), get(f, "c8", "p99_ms")),
         1.0, "<="),
        ("c1 p50 <= 1.15x Flask floor p50", ratio(get(s, "c1", "p50_ms"), get(f, "c1", "p50_ms")), 1.15, "<="),
        ("10,000-ride batch p50 <= 15 ms", get(s, "batch", "p50_ms"), 15.0, "<="),
        ("single ride p99 while 2 connections stream 10k batches <= 15 ms", get(s, "mixed", "p99_ms"), 15.0, "<="),
        ("ready on bundled model <= 1.5 s", get(s, "startup_s"), 1.5, "<="),
        ("each extra worker <= 30 MB PSS (its private pages)", get(s, "memory", "extra_worker_mb"), 30.0, "<="),
        ("zero errors in every point of every round",
         sum(get(s, p, "errors_all_rounds") or 0 for p in POINTS), 0, "<="),
        ("slow clients (256 idle + 64 trickling): polite failures = 0", slow.get("failed"), 0, "<="),
        ("slow clients (256 idle + 64 trickling): polite p99 < 100 ms", slow.get("p99_ms"), 100.0, "<"),
        ("shadow on (rate 1.0): c1 p50 <= 1.10x shadow off", ratio(get(on, "c1", "p50_ms"), get(off, "c1", "p50_ms")),
         1.10, "<="),
        ("shadow on (rate 1.0): c8 req/s >= 0.90x shadow off", ratio(get(on, "c8", "rps"), get(off, "c8", "rps")),
         0.90, ">="),
        ("(noise-robust view of the line above) shadow on: c8 server CPU per request / shadow off's",
         ratio(get(on, "cpu_us_per_req", "c8"), get(off, "cpu_us_per_req", "c8")), 1.10, "<="),
    ]
    out = []
    for name, value, bound, op in rows:
        if res["smoke"] or value is None:
            status = "n/a (smoke)" if res["smoke"] else "no data"
        else:
            met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
            status = "met" if met else "MISSED"
        out.append({"target": name, "value": value, "bound": bound, "status": status})
    return out


def fmt(v: t.Any, nd: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(res: dict[str, t.Any]) -> str:
    m = res["machine"]
    base, floor = res["servers"].get("course", {}), res["servers"].get("flask-const", {})
    busy = m["loadavg_start"][0] >= (m["nproc"] or 1) / 2
    lines = [
        f"Run {res['started_at']} · mode {'smoke' if res['smoke'] else 'full'} · {res['workers']} workers each · "
        f"wrk -t1, {res['seconds']} s per point after {res['warmup']} s warm-up · "
        f"best of {res['rounds']} interleaved round(s) per point, errors summed over all",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f", {m['wrk']}; "
        f"nice {m.get('nice', 0)}, load average {' / '.join(f'{x:.2f}' for x in m['loadavg_start'])} at start, "
        f"{' / '.join(f'{x:.2f}' for x in res['loadavg_end'])} at end",
        *([f"**Warning: the machine was busy (1-minute load {m['loadavg_start'][0]:.2f} on {m['nproc']} CPUs): "
            "every number is noisy, absolute ones are low.**"] if busy else []),
        "",
        "| server | c8 req/s | c8 p50 / p99 ms | c8 no keep-alive req/s | c8 no keep-alive p99 ms | c1 req/s "
        "| c1 p50 / p99 ms | 10k batch p50 / p99 ms | single ride p50 / p99 ms under 2 batch streams "
        "| errors | ready s | PSS MiB master + workers "
        "| c8 vs course | c8 vs Flask floor | server CPU µs/req c1 / c8 | CPU/req vs Flask floor (c8) "
        "| c8 requests per worker |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["servers"].values():
        c8, c1, cl, b, mx, mem = (r.get(k, {}) for k in ("c8", "c1", "c8close", "batch", "mixed", "memory"))
        errors = sum(r.get(p, {}).get("errors_all_rounds", 0) for p in POINTS)
        workers = " + ".join(fmt(w, 1) for w in mem.get("worker_pss_mb", []))
        cpu = r.get("cpu_us_per_req", {})
        share = c8.get("requests_by_worker")
        lines.append(
            f"| {r['label']} | {fmt(c8.get('rps'), 0)} | {fmt(c8.get('p50_ms'))} / {fmt(c8.get('p99_ms'))} "
            f"| {fmt(cl.get('rps'), 0)} | {fmt(cl.get('p99_ms'))} "
            f"| {fmt(c1.get('rps'), 0)} | {fmt(c1.get('p50_ms'))} / {fmt(c1.get('p99_ms'))} "
            f"| {fmt(b.get('p50_ms'))} / {fmt(b.get('p99_ms'))} "
            f"| {fmt(mx.get('p50_ms'))} / {fmt(mx.get('p99_ms'))} | {errors} | {fmt(r.get('startup_s'))} "
            f"| {fmt(mem.get('master_pss_mb'), 1)} + {workers}"
            + (f" (private per worker {fmt(mem['extra_worker_mb'], 1)})" if mem.get("extra_worker_mb") else "")
            + " "
            f"| {fmt(ratio(c8.get('rps'), base.get('c8', {}).get('rps')))}× "
            f"| {fmt(ratio(c8.get('rps'), floor.get('c8', {}).get('rps')))}× "
            f"| {fmt(cpu.get('c1'), 0)} / {fmt(cpu.get('c8'), 0)} "
            f"| {fmt(ratio(cpu.get('c8'), floor.get('cpu_us_per_req', {}).get('c8')))}× "
            f"| {' / '.join(fmt(n) for n in share) if share else '—'} |")
    slow = [(r["label"], r["slow_clients"]) for r in res["servers"].values() if r.get("slow_clients")]
    if slow:
        lines += ["", "Slow clients: 256 idle keep-alive + 64 trickling connections (32 headers, 32 body) held "
                  "open, a polite client POSTs one ride every 0.1 s on a fresh connection (5 s timeout):", "",
                  "| server | polite answered | failed | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
        for label, row in slow:
            lines.append(f"| {label} | {row['answered']} | {row['failed']} | {fmt(row['p50_ms'])} "
                         f"| {fmt(row['p99_ms'])} | {fmt(row['max_ms'])} |")
    lines += ["", "| target | measured | status |", "|---|---|---|"]
    for tgt in res["targets"]:
        lines.append(f"| {tgt['target']} | {fmt(tgt['value'])} | {tgt['status']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny points, no targets judged (for make test)")
    ap.add_argument("--seconds", type=float, help="seconds per wrk point (default 5; smoke 1)")
    ap.add_argument("--warmup", type=float, help="discarded warm-up seconds per point (default 1; smoke 0)")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or 2))
    ap.add_argument("--batch-requests", type=int, help="sequential 10k-ride requests (default 50; smoke 3)")
    ap.add_argument("--rounds", type=int, help="rounds over all servers; the best is reported (default 2; smoke 1)")
    ap.add_argument("--only", nargs="*", choices=list(SERVERS),
                    help=f"measure only these servers (default: {' '.join(DEFAULT_SERVERS)})")
    ap.add_argument("--slow-seconds", type=float, default=8.0, help="polite-client seconds of the slow-client row")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON + markdown")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the 1-minute load average to fall below nproc / 2")
    args = ap.parse_args(argv)
    quiet_end = time.monotonic() + args.wait_quiet
    while os.getloadavg()[0] >= (os.cpu_count() or 1) / 2 and time.monotonic() < quiet_end:
        time.sleep(5)
    seconds = args.seconds or (1 if args.smoke else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    batch_n = args.batch_requests or (3 if args.smoke else 30)
    rounds = args.rounds or (1 if args.smoke else 2)

    wrk = ensure_wrk()
    servers = {k: v for k, v in SERVERS.items()
               if k in (args.only or (DEFAULT_SERVERS if args.smoke else FULL_SERVERS))}
    if os.environ.get("MLFLOW_TRACKING_URI") and not args.only:
        servers["service-registry"] = {**SERVERS["service"], "label": "this service (registry model)"}
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    res: dict[str, t.Any] = {"started_at": started, "smoke": args.smoke, "workers": args.workers,
                             "seconds": seconds, "warmup": warmup, "rounds": rounds, "machine": machine(),
                             "servers": {}, "loadavg_rounds": []}
    args.out.mkdir(parents=True, exist_ok=True)
    body = batch_body()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        shadow_envs: dict[str, dict[str, str]] = {}
        if set(servers) & set(SHADOW_SERVERS):  # a registry with v1 @production, v2 @challenger
            from bench.shadow import registry

            shadow_envs = stack.enter_context(registry(Path(tmp)))
        lua = Path(tmp) / "post.lua"
        lua.write_text(WRK_LUA % (json.dumps(json.dumps(RIDE)), ""))
        lua_close = Path(tmp) / "post-close.lua"
        lua_close.write_text(WRK_LUA % (json.dumps(json.dumps(RIDE)), 'wrk.headers["Connection"] = "close"'))
        lua_batch = Path(tmp) / "post-batch.lua"
        lua_batch.write_text(WRK_LUA % (json.dumps(body.decode()), ""))
        running: list[Gunicorn] = []
        envs: dict[str, dict[str, str]] = {}

        def make(key: str, name: str) -> Gunicorn:
            spec = servers[key]
            return Gunicorn(name, spec["app"], spec["ready"], args.workers, envs[key], Path(tmp),
                            config=spec["config"], args=spec["args"])

        try:
            # bundled-model servers must not reach for a registry; the registry one keeps the env
            for key, spec in servers.items():
                env = {} if key == "service-registry" else dict(shadow_envs.get(key) or {"MLFLOW_TRACKING_URI": ""})
                env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / f"prom-{key}")  # as the image sets it
                envs[key] = env
                server = make(key, key).start()
                running.append(server)
                res["servers"][key] = {"label": spec["label"], "app": spec["app"], "config": spec["config"],
                                       "args": spec["args"], "rounds": [],
                                       "startups_s": [round(server.startup_s or 0, 3)]}
            # all up side by side; measured one at a time, round after round, so that a burst of
            # load from elsewhere on the machine hits one round of every server, not one server
            for rnd in range(rounds):
                res["loadavg_rounds"].append(os.getloadavg())
                for server in running:
                    r = res["servers"][server.name]
                    print(f"# round {rnd + 1}/{rounds} {server.name}: c1, c8, c8close, batch "
                          f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                    point = {"c1": wrk_point(wrk, lua, server.port, 1, seconds, warmup, server.cpu_seconds)}
                    offset = server.log_path.stat().st_size
                    point["c8"] = wrk_point(wrk, lua, server.port, 8, seconds, warmup, server.cpu_seconds)
                    if server.name.startswith("service"):  # warm-up included: the same connections
                        point["c8"]["requests_by_worker"] = server.requests_by_worker(offset)[0]
                    point["c8close"] = wrk_point(wrk, lua_close, server.port, 8, seconds, warmup, server.cpu_seconds)
                    r["memory"] = server.memory()
                    point["batch"] = batch_point(server.port, body, batch_n, 2 if batch_n > 3 else 1)
                    if server.name.startswith("service"):
                        point["mixed"] = mixed_point(wrk, lua, lua_batch, server.port, seconds)
                    r["rounds"].append(point)
                    if rnd:  # one more cold start per round (a throwaway instance)
                        extra = make(server.name, f"{server.name}-start{rnd}")
                        try:
                            r["startups_s"].append(round(extra.start().startup_s or 0, 3))
                        finally:
                            extra.stop()
            for server in running:  # slow clients, once per service server, after the rounds
                if server.name.startswith("service") and server.name not in SHADOW_SERVERS:
                    print(f"# slow clients {server.name}", file=sys.stderr, flush=True)
                    from bench.hostile import under_attack

                    row = under_attack(server.port, SLOW_CLIENTS, 2.0 if args.smoke else args.slow_seconds)
                    res["servers"][server.name]["slow_clients"] = row
        finally:
            for server in running:
                server.stop()
    for r in res["servers"].values():  # the best round of each point: the least disturbed one
        for point, better in (("c1", "rps"), ("c8", "rps"), ("c8close", "rps"), ("batch", "p50_ms"),
                              ("mixed", "p99_ms")):
            done = [rd[point] for rd in r["rounds"] if point in rd]
            if not done:
                continue
            r[point] = (max if better == "rps" else min)(done, key=lambda d, k=better: d[k])
            r[point]["errors_all_rounds"] = sum(d["errors"] for d in done)
        r["startup_s"] = min(r["startups_s"])
        r["cpu_us_per_req"] = {p: min((rd[p]["cpu_us_per_req"] for rd in r["rounds"] if rd[p].get("cpu_us_per_req")),
                                      default=None) for p in ("c1", "c8", "c8close")}
    res["loadavg_end"] = os.getloadavg()
    res["targets"] = judge(res)
    table = markdown(res)
    stamp = started.replace(":", "").replace("+0000", "Z")
    for path in (args.out / f"bench-{stamp}.json", args.out / "latest.json"):
        path.write_text(json.dumps(res, indent=2) + "\n")
    for path in (args.out / f"bench-{stamp}.md", args.out / "latest.md"):
        path.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
