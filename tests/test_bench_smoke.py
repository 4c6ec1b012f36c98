"""The benchmark script runs end to end in smoke mode (structure only: no timing is judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {"service", "service-sync", "course", "flask-const"}


@pytest.mark.slow  # four servers started and loaded: ~40 s (handed out early, conftest.py)
def test_bench_smoke_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--workers", "1",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| server |" in out.stdout and "| target |" in out.stdout
    result = json.loads((tmp_path / "latest.json").read_text())
    assert SERVERS <= set(result["servers"])
    assert {"nproc", "cpu", "python", "versions"} <= set(result["machine"])
    for name in SERVERS:
        server = result["servers"][name]
        for point in ("c1", "c8", "c8close"):
            assert server[point]["requests"] > 0
            assert {"rps", "p50_ms", "p99_ms", "errors"} <= set(server[point])
        assert server["batch"]["requests"] > 0
        assert server["startup_s"] > 0
        assert server["memory"]["master_pss_mb"] > 0 and server["memory"]["worker_pss_mb"]
    assert result["servers"]["service"]["c8"]["errors"] == 0
    assert result["servers"]["service"]["batch"]["errors"] == 0
    mixed = result["servers"]["service"]["mixed"]  # single rides while two connections stream 10k batches
    assert mixed["requests"] > 0 and mixed["batch_rps"] > 0 and mixed["errors"] == 0, mixed
    slow = result["servers"]["service"]["slow_clients"]  # the slow-client row ran against the default
    assert slow["answered"] > 0 and slow["failed"] == 0, slow
    assert len(result["targets"]) >= 7
    assert all(t["status"].startswith("n/a") for t in result["targets"])
    assert (tmp_path / "latest.md").read_text().startswith("Run ")
