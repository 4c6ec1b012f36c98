"""Static checks that belong to the suite: lint and gunicorn's own config check."""

import subprocess
import sys
from pathlib import Path

from tests.synthetic import ROOT

BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_is_clean():
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_gunicorn_config_is_valid():
    result = run(str(BIN / "gunicorn"), "--check-config")
    assert result.returncode == 0, result.stdout + result.stderr


def test_gunicorn_config_reads_port_and_workers():
    code = "import runpy; c = runpy.run_path('gunicorn.conf.py'); print(c['bind'][0], c['workers'])"
    env_run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env={"PORT": "8123", "WEB_CONCURRENCY": "3", "PATH": "/usr/bin:/bin"}, check=True)
    assert env_run.stdout.split() == ["0.0.0.0:8123", "3"]
    default = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"}, check=True)
    assert default.stdout.split()[0] == "0.0.0.0:9696"
