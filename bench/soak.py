"""Soak: the service at c8 for 5 minutes; memory must stay flat and no request may fail.

Starts the service under the production gunicorn.conf.py on a free 127.0.0.1 port, runs wrk
(one ride per POST, c8) for ``--seconds``, samples RSS and PSS of master + workers every
``--every`` seconds, and passes when, after ``--warmup`` seconds, RSS grew < 5 % and wrk saw
0 errors (non-2xx + socket errors). Worker recycling (``max_requests``) is switched off by
default, as it would hide a leak; ``--keep-recycling`` keeps the production setting.
Not part of CI (``make soak``). Exit status 0 = pass.

    .venv/bin/python bench/soak.py                 # 5 min
    .venv/bin/python bench/soak.py --seconds 60    # a shorter look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import RESULTS, RIDE, SERVERS, WRK_LUA, Gunicorn, ensure_wrk, machine, smaps  # noqa: E402

MAX_GROWTH = 0.05


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(server: Gunicorn) -> dict[str, float]:
    assert server.proc is not None
    pids = [server.proc.pid, *server.workers()]
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    return {"t": time.monotonic(), "rss_mb": round(sum(rss_mb(p) for p in alive), 1),
            "pss_mb": round(sum(smaps(p)["pss"] for p in alive), 1), "processes": len(alive)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30, help="seconds before the memory baseline is taken")
    ap.add_argument("--every", type=float, default=5.0, help="memory sampling period, seconds")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY") or 2))
    ap.add_argument("--keep-recycling", action="store_true", help="keep max_requests from gunicorn.conf.py")
    args = ap.parse_args(argv)
    wrk = ensure_wrk()
    env = {"MLFLOW_TRACKING_URI": ""}
    if not args.keep_recycling:
        env["GUNICORN_CMD_ARGS"] = (os.environ.get("GUNICORN_CMD_ARGS", "") + " --max-requests 0").strip()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tmp) / "prom")
        lua = Path(tmp) / "post.lua"
        lua.write_text(WRK_LUA % json.dumps(json.dumps(RIDE)))
        server = Gunicorn("soak", SERVERS["service"]["app"], "/ready", args.workers, env, Path(tmp)).start()
        samples: list[dict[str, float]] = []
        try:
            t0 = time.monotonic()
            load = subprocess.Popen([wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(lua),
                                     "--timeout", "5s", f"http://127.0.0.1:{server.port}/predict"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while load.poll() is None and time.monotonic() - t0 < args.seconds + 60:
                time.sleep(args.every)
                samples.append({**sample(server), "t": round(time.monotonic() - t0, 1)})
                print(f"# t={samples[-1]['t']:>6.1f}s rss={samples[-1]['rss_mb']} MiB pss={samples[-1]['pss_mb']} MiB",
                      file=sys.stderr, flush=True)
            out, err = load.communicate(timeout=60)
        finally:
            server.stop()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        print(f"wrk printed no summary: {out[-500:]} {err[-500:]}", file=sys.stderr)
        return 2
    raw = json.loads(line.split(" ", 1)[1])
    errors = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    steady = [s for s in samples if s["t"] >= args.warmup]
    base, last = steady[0]["rss_mb"], steady[-1]["rss_mb"]
    growth = (max(s["rss_mb"] for s in steady[-3:]) - base) / base
    result = {
        "machine": machine(), "seconds": args.seconds, "connections": args.connections, "workers": args.workers,
        "recycling": args.keep_recycling, "requests": raw["requests"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1), "p99_ms": raw["p99_us"] / 1000,
        "errors": errors, "rss_after_warmup_mb": base, "rss_end_mb": last, "rss_growth": round(growth, 4),
        "samples": samples,
    }
    passed = errors == 0 and growth < MAX_GROWTH
    result["passed"] = passed
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"soak {args.seconds}s c{args.connections}: {raw['requests']:,} requests ({result['rps']:,.0f}/s, "
          f"p99 {result['p99_ms']:.2f} ms), errors {errors}; RSS {base} -> {last} MiB after {args.warmup}s warm-up "
          f"({growth:+.1%}, limit {MAX_GROWTH:.0%}): {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
