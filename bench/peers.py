"""This service against the servers users would pick instead, same model, same wrk load, one run.

Peers, each in its OWN virtualenv under ``bench/.peers/<name>/`` (gitignored), installed with
``pip install --require-hashes --no-deps`` from ``bench/peer_apps/requirements-<name>.txt``
(every package pinned with its sha256; written by ``--lock`` from pip's own resolver report):

* ``mlserver``  MLServer with a custom runtime (bench/peer_apps/mlserver_runtime.py), V2 JSON
                at ``/v2/models/ride-duration/infer``, ``parallel_workers`` = workers
* ``bentoml``   a BentoML service (bench/peer_apps/bento_service.py), ``POST /predict``, ``workers`` = workers
* ``mlflow``    ``mlflow models serve --env-manager local --workers N`` on a pyfunc saved from the
                same pickle (bench/peer_apps/mlflow_model.py), ``POST /invocations``

All load ``model/lin_reg.bin`` and the service's own ``ride_duration/features.py``
(bench/peer_apps/peer_model.py): ``prepare_features`` -> ``dv.transform`` -> ``predict``. Before
the load, each peer's answer for the reference ride must equal the service's (1e-6). The
service runs under the production ``gunicorn.conf.py`` with the same number of workers. Every
server is measured with the same ``wrk -t1 -cN`` keep-alive load (one ride per request) after a
discarded warm-up, round after round (interleaved, best round kept). Output: a markdown table
with req/s, p50/p99 and the service's ratios to the best peer (targets: >= 3x the best peer's
req/s, p99 <= 1/4 of the best peer's p99), under bench/results/peers-latest.{md,json}.

    .venv/bin/python bench/peers.py               # install once (cached), then ~2 min of load
    .venv/bin/python bench/peers.py --lock        # re-resolve the pinned requirements (PyPI)
    .venv/bin/python bench/peers.py --only mlflow --seconds 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import RESULTS, RIDE, WRK_LUA, Gunicorn, ensure_wrk, free_port, machine, wrk_point  # noqa: E402

APPS = ROOT / "bench" / "peer_apps"
VENVS = ROOT / "bench" / ".peers"
PYTHON = os.environ.get("PEER_PYTHON") or sys.executable
"""The peers' venvs are made from the interpreter running the bench (the one behind our service's
venv, the Makefile's choice), so the table compares servers, not Python builds."""
BASE_PINS = ["scikit-learn==1.9.1", "numpy==2.4.6"]  # what the bundled pickle was written with
PEERS: dict[str, dict[str, t.Any]] = {
    "mlserver": {"pins": ["mlserver==1.7.1", "uvloop==0.21.0"],  # uvloop 0.23 breaks its workers
                  "label": "MLServer 1.7.1 (custom runtime, V2 JSON)"},
    "bentoml": {"pins": ["bentoml==1.4.40"], "label": "BentoML 1.4.40 (@bentoml.service)"},
    "mlflow": {"pins": ["mlflow==3.17.2"], "label": "mlflow models serve 3.17.2 (pyfunc, --env-manager local)"},
}
MODEL_NAME = "ride-duration"


# ---------------------------------------------------------------- environments

def requirements(name: str) -> Path:
    return APPS / f"requirements-{name}.txt"


def lock(name: str) -> None:
    """Resolve the peer's pins with pip (dry run, nothing installed) and write every package of the
    result with its sha256: the file ``pip install --require-hashes`` installs from."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", str(report), *PEERS[name]["pins"], *BASE_PINS], check=True)
        write_requirements(name, report)


def write_requirements(name: str, report: Path) -> None:
    """``requirements-<name>.txt`` from a pip installation report: name==version --hash=sha256:..."""
    items = json.loads(report.read_text())["install"]
    lines = [f"# {name}: {' '.join(PEERS[name]['pins'] + BASE_PINS)} resolved by pip for CPython 3.11 on linux "
             "x86_64, every package pinned with its sha256 (bench/peers.py --lock writes this file)."]
    for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
        meta, info = item["metadata"], item["download_info"]
        archive = info.get("archive_info", {})
        digest = archive.get("hashes", {}).get("sha256") or archive.get("hash", "").removeprefix("sha256=")
        if not digest:
            raise RuntimeError(f"{meta['name']}: pip's report has no sha256 ({info.get('url')})")
        lines.append(f"{meta['name']}=={meta['version']} --hash=sha256:{digest}")
    requirements(name).write_text("\n".join(lines) + "\n")
    print(f"wrote {requirements(name)} ({len(items)} packages)", file=sys.stderr)


def venv(name: str) -> Path:
    """The peer's virtualenv, (re)installed only when its requirements file changed."""
    target = VENVS / name
    req = requirements(name)
    stamp = target / ".requirements.sha256"
    interpreter = os.path.realpath(PYTHON).encode()  # a venv's python is a symlink to its interpreter
    digest = hashlib.sha256(req.read_bytes() + interpreter).hexdigest()  # remade for another interpreter
    if stamp.exists() and stamp.read_text() == digest:
        return target
    print(f"# installing {name} into {target} (once; cached by the requirements' hash)", file=sys.stderr, flush=True)
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([PYTHON, "-m", "venv", str(target)], check=True)
    subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--require-hashes", "--no-deps", "-r", str(req)], check=True)
    stamp.write_text(digest)
    return target


# ---------------------------------------------------------------- servers

class Peer:
    """One peer server on a free loopback port, started from its own venv."""

    def __init__(self, name: str, workers: int, tmp: Path) -> None:
        self.name, self.workers, self.tmp = name, workers, tmp
        self.port = free_port()
        self.venv = venv(name)
        self.log_path = tmp / f"peer-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "PEER_REPO_ROOT": str(ROOT), "PEER_WORKERS": str(workers),
                    "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_TRACKING_URI": "", "PYTHONPATH": str(APPS),
                    "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(self.venv)}
        self.path, self.body = self.request()

    def request(self) -> tuple[str, dict[str, t.Any]]:
        if self.name == "mlserver":
            return f"/v2/models/{MODEL_NAME}/infer", {"inputs": [
                {"name": "PULocationID", "shape": [1], "datatype": "INT64", "data": [RIDE["PULocationID"]]},
                {"name": "DOLocationID", "shape": [1], "datatype": "INT64", "data": [RIDE["DOLocationID"]]},
                {"name": "trip_distance", "shape": [1], "datatype": "FP64", "data": [RIDE["trip_distance"]]}]}
        if self.name == "bentoml":
            return "/predict", {"ride": RIDE}
        return "/invocations", {"dataframe_records": [RIDE]}

    def command(self) -> list[str]:
        bin_ = self.venv / "bin"
        if self.name == "mlserver":
            folder = self.tmp / "mlserver"
            (folder / MODEL_NAME).mkdir(parents=True, exist_ok=True)
            (folder / "settings.json").write_text(json.dumps({
                "host": "127.0.0.1", "http_port": self.port, "grpc_port": free_port(),
                "metrics_port": free_port(), "parallel_workers": self.workers}))
            (folder / MODEL_NAME / "model-settings.json").write_text(json.dumps({
                "name": MODEL_NAME, "implementation": "mlserver_runtime.RideDurationRuntime"}))
            return [str(bin_ / "mlserver"), "start", str(folder)]
        if self.name == "bentoml":
            return [str(bin_ / "bentoml"), "serve", "bento_service:RideDuration", "--working-dir", str(APPS),
                    "--host", "127.0.0.1", "--port", str(self.port)]
        model = self.tmp / "mlflow-model"
        subprocess.run([str(bin_ / "python"), str(APPS / "mlflow_model.py"), str(model)], env=self.env,
                       check=True, capture_output=True)
        return [str(bin_ / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]

    def start(self, timeout: float = 180.0) -> Peer:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.command(), cwd=APPS, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if self.predict() is not None:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: no prediction within {timeout}s; {self.log_path.read_text()[-2000:]}")

    def predict(self) -> float | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("POST", self.path, json.dumps(self.body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
        finally:
            conn.close()
        if resp.status != 200:
            return None
        if self.name == "mlserver":
            return float(data["outputs"][0]["data"][0])
        if self.name == "bentoml":
            return float(data["duration"])
        return float(data["predictions"][0])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def service_prediction(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", "/predict", json.dumps(RIDE), {"Content-Type": "application/json"})
    value = float(json.loads(conn.getresponse().read())["duration"])
    conn.close()
    return value


# ---------------------------------------------------------------- report

def markdown(res: dict[str, t.Any]) -> str:
    m = res["machine"]
    rows = res["servers"]
    peers = {k: v for k, v in rows.items() if k != "service"}
    best_rps = max((v["rps"] for v in peers.values()), default=None)
    best_p99 = min((v["p99_ms"] for v in peers.values()), default=None)
    s = rows.get("service", {})
    lines = [
        f"Run {res['started_at']} · {res['workers']} workers each · wrk -t1 -c{res['connections']} keep-alive, "
        f"{res['seconds']} s per point after {res['warmup']} s warm-up, best of {res['rounds']} interleaved round(s)",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, load average {' / '.join(f'{x:.2f}' for x in m['loadavg_start'])} "
        f"at start, {' / '.join(f'{x:.2f}' for x in res['loadavg_end'])} at end",
        "",
        "| server | req/s | p50 ms | p99 ms | errors (all rounds) | prediction for the reference ride |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        lines.append(f"| {row['label']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                     f"| {row['errors_all_rounds']} | {row['prediction']:.6f} |")
    if s and best_rps and best_p99:
        rps_ratio, p99_ratio = s["rps"] / best_rps, s["p99_ms"] / best_p99
        lines += ["", "| target | measured | status |", "|---|---|---|",
                  f"| req/s >= 3x the best peer's ({best_rps:,.0f}) | {rps_ratio:.2f}x "
                  f"| {'met' if rps_ratio >= 3 else 'MISSED'} |",
                  f"| p99 <= 1/4 of the best peer's ({best_p99:.2f} ms) | {p99_ratio:.2f}x "
                  f"| {'met' if p99_ratio <= 0.25 else 'MISSED'} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lock", action="store_true", help="re-resolve bench/peer_apps/requirements-*.txt and exit")
    ap.add_argument("--only", nargs="*", choices=list(PEERS), help="peers to measure (default: all)")
    ap.add_argument("--install-only", action="store_true", help="create the peer venvs and exit")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    names = args.only or list(PEERS)
    if args.lock:
        for name in names:
            lock(name)
        return 0
    for name in names:
        venv(name)
    if args.install_only:
        return 0
    wrk = ensure_wrk()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    res: dict[str, t.Any] = {"started_at": started, "machine": machine(), "workers": args.workers,
                             "connections": args.connections, "seconds": args.seconds, "warmup": args.warmup,
                             "rounds": args.rounds, "servers": {}}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        service = Gunicorn("service", "predict:app", "/ready", args.workers,
                           {"MLFLOW_TRACKING_URI": "", "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom")}, tmp)
        running: list[t.Any] = []
        try:
            running.append(service.start(timeout=180))
            expected = service_prediction(service.port)
            targets: dict[str, tuple[int, Path, str]] = {}
            lua = tmp / "service.lua"
            lua.write_text(WRK_LUA % (json.dumps(json.dumps(RIDE)), ""))
            targets["service"] = (service.port, lua, "/predict")
            predictions = {"service": expected}
            for name in names:
                print(f"# starting {name}", file=sys.stderr, flush=True)
                peer = Peer(name, args.workers, tmp).start()
                running.append(peer)
                got = peer.predict()
                if got is None or abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
                    raise RuntimeError(f"{name} predicts {got} for the reference ride, the service {expected}")
                predictions[name] = got
                peer_lua = tmp / f"{name}.lua"
                peer_lua.write_text(WRK_LUA % (json.dumps(json.dumps(peer.body)), ""))
                targets[name] = (peer.port, peer_lua, peer.path)
            rounds: dict[str, list[dict[str, t.Any]]] = {k: [] for k in targets}
            for rnd in range(args.rounds):
                for name, (port, lua_file, path) in targets.items():
                    print(f"# round {rnd + 1}/{args.rounds} {name} (load {os.getloadavg()[0]:.2f})",
                          file=sys.stderr, flush=True)
                    rounds[name].append(wrk_point(wrk, lua_file, port, args.connections, args.seconds,
                                                  args.warmup, path=path))
            for name, done in rounds.items():
                best = max(done, key=lambda d: d["rps"])
                label = PEERS[name]["label"] if name in PEERS else "this service (gunicorn.conf.py, gevent)"
                res["servers"][name] = {**best, "label": label, "prediction": predictions[name],
                                        "errors_all_rounds": sum(d["errors"] for d in done),
                                        "rounds": done}
        finally:
            for server in reversed(running):
                server.stop()
    res["loadavg_end"] = os.getloadavg()
    table = markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers-latest.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "peers-latest.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
