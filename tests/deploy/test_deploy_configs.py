"""Deployment configs: the offline validators as assertions, plus cross-file consistency.

Validators (a missing tool fails, it is not skipped): hadolint, check-jsonschema (GitHub workflow
and Compose Specification schemas), actionlint, ``docker-compose config`` / ``docker compose
config``, ``kubectl kustomize`` piped into ``kubernetes-validate --strict``, and checkov (its own
venv: ``CHECKOV``, default ``.venv-iac/bin/checkov``). scripts/lint-deploy.sh runs the same set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

WORKFLOWS = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
COMPOSE_FILES = sorted(str(p) for p in ROOT.glob("docker-compose*.yml"))
COMPOSE_COMBOS = [
    ("docker-compose.yml", "docker-compose.override.yml"),
    ("docker-compose.yml", "docker-compose.hostnet.yml"),
    ("docker-compose.yml", "docker-compose.hostnet.yml", "docker-compose.data.yml"),
]
APP_UID = 10001


def tool(name: str) -> str:
    """Path of a validator: next to this interpreter (the project venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed (make install-dev)"
    return found


def run(*cmd: str, stdin: str | None = None, timeout: float = 300) -> str:
    """Run a validator in the repo root; assert it exits 0; return its stdout."""
    proc = subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def rendered_k8s() -> str:
    return run(tool("kubectl"), "kustomize", "k8s")


@pytest.fixture(scope="module")
def k8s_docs(rendered_k8s: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(rendered_k8s) if doc}


def checkov() -> str:
    path = Path(os.environ.get("CHECKOV", ROOT / ".venv-iac" / "bin" / "checkov"))
    assert path.exists(), f"checkov not found at {path} (make install-dev, or set CHECKOV)"
    return str(path)


# --- validators -----------------------------------------------------------------------------------

def test_hadolint_dockerfile():
    run(tool("hadolint"), "Dockerfile")


def test_workflows_match_github_schema():
    assert WORKFLOWS, "no workflow files"
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)


def test_actionlint():
    run(tool("actionlint"), *WORKFLOWS)


def test_compose_files_match_compose_spec():
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES)


def compose_clis() -> list[list[str]]:
    clis = []
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        clis.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        clis.append(["docker-compose"])
    return clis


@pytest.mark.parametrize("files", COMPOSE_COMBOS, ids=lambda f: "+".join(Path(x).stem for x in f))
def test_compose_config(files, monkeypatch):
    clis = compose_clis()
    assert clis, "neither `docker compose` (v2) nor docker-compose (1.29, apt) is installed"
    monkeypatch.setenv("TLC_DATA_DIR", str(ROOT))
    for cli in clis:
        args = [a for f in files for a in ("-f", f)]
        out = subprocess.run([*cli, *args, "config"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{' '.join(cli)} config: {out.stderr}"


def test_kustomize_output_passes_strict_schema_validation(rendered_k8s):
    run(tool("kubernetes-validate"), "--strict", "-", stdin=rendered_k8s)


CHECKOV_FRAMEWORKS = {"kubernetes", "dockerfile", "gitlab_ci", "github_actions"}


@pytest.mark.slow
def test_checkov_passes_on_the_dockerfile_the_pipelines_and_the_kustomize_render(rendered_k8s, tmp_path):
    """One checkov run over the kustomize render, the Dockerfile, .gitlab-ci.yml and the GitHub workflows
    (its start-up, ~3.5 CPU s, is most of a run's cost); the workflows as scripts/workflows-for-checkov.sh
    copies them, since checkov skips ours silently. Every framework must report checks: a file checkov
    could not read gives an empty report, not a failure."""
    manifest = tmp_path / "k8s.yaml"
    manifest.write_text(rendered_k8s)
    run("bash", "scripts/workflows-for-checkov.sh", str(tmp_path))
    workflows = tmp_path / ".github" / "workflows"
    assert sorted(p.name for p in workflows.iterdir()) == sorted(Path(p).name for p in WORKFLOWS)
    files = [str(manifest), "Dockerfile", ".gitlab-ci.yml", *map(str, sorted(workflows.iterdir()))]
    proc = subprocess.run([checkov(), "--skip-download", "--compact", "-o", "json", "--framework",
                           *sorted(CHECKOV_FRAMEWORKS), *(a for f in files for a in ("-f", f))],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summaries = {r["check_type"]: r["summary"] for r in reports}
    assert set(summaries) == CHECKOV_FRAMEWORKS, f"{summaries}\n{proc.stderr[-3000:]}"
    assert all(s["passed"] > 0 for s in summaries.values()), summaries
    failed = [(r["check_type"], c["check_id"], c["file_path"], c["check_name"])
              for r in reports for c in r["results"]["failed_checks"]]
    assert not failed and proc.returncode == 0, failed


# --- consistency between the files ------------------------------------------------------------------

def gunicorn_settings() -> dict:
    """gunicorn.conf.py's plain settings, read in a child process: running it here would
    monkey-patch this test process for gevent and give it a metrics directory."""
    code = ("import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
            "print(json.dumps({k: v for k, v in c.items() if isinstance(v, (int, float, str, bool, list))}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout.splitlines()[-1])


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(value))
    assert match, value
    number, unit = float(match[1]), match[2] or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_dockerfile_runtime_stage_is_last_and_hardened():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I)
    assert stages[-1] == "runtime", stages
    assert "train" in stages
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(rf"^USER {APP_UID}:{APP_UID}$", runtime, re.M)
    assert re.search(r"^EXPOSE 9696$", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[\"python\"", runtime, re.M)
    assert re.search(r'^CMD \["gunicorn", "--config", "gunicorn.conf.py"\]$', runtime, re.M)
    assert "pipenv" not in runtime, "pipenv must stay in the builder stages"
    assert "pipenv install --deploy" in text


def test_compose_stop_grace_matches_gunicorn_graceful_timeout():
    graceful = gunicorn_settings()["graceful_timeout"]
    predict = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["predict"]
    assert seconds(predict["stop_grace_period"]) >= graceful


def test_compose_predict_waits_for_registry_and_training():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    depends = services["predict"]["depends_on"]
    assert depends["mlflow"]["condition"] == "service_healthy"
    assert depends["train"]["condition"] == "service_completed_successfully"
    assert services["predict"]["environment"]["MODEL_FALLBACK"] == "true"
    assert "--workers=1" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # mlflow server (>= 3.5) answers 403 to Host headers other than localhost/private IPs: the
    # others reach it as http://mlflow:5000 (measured: 403 without this setting, 200 with it).
    allowed = services["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed
    assert services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_k8s_deployment_matches_image_and_gunicorn(k8s_docs):
    pod = k8s_docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == APP_UID
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "startupProbe" in container
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= gunicorn_settings()["graceful_timeout"] + float(pre_stop[1])
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env["PROMETHEUS_MULTIPROC_DIR"]} <= mounts
    config = k8s_docs["ConfigMap"]["data"]
    assert {"MLFLOW_TRACKING_URI", "MODEL_URI", "MODEL_POLL_SECONDS", "MODEL_FALLBACK"} <= set(config)
    assert k8s_docs["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert {"Service", "PodDisruptionBudget", "NetworkPolicy"} <= set(k8s_docs)


# --- supply chain (issue 18) ---------------------------------------------------------------------------

PINNED_BASE = re.compile(r"^ARG PYTHON_IMAGE=(python:3\.11-slim)@sha256:[0-9a-f]{64}$", re.M)


def test_the_base_image_is_pinned_by_digest_with_its_update_path():
    text = (ROOT / "Dockerfile").read_text()
    assert PINNED_BASE.search(text), "ARG PYTHON_IMAGE must be python:3.11-slim@sha256:<64 hex>"
    assert "docker buildx imagetools inspect python:3.11-slim" in text  # how to move the pin
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS base$", text, re.M)
    assert "docker buildx imagetools inspect python:3.11-slim" in (ROOT / "docs" / "security.md").read_text()


def test_container_test_builds_on_a_stand_in_when_the_digest_cannot_be_pulled(tmp_path):
    """scripts/container-test.sh's base-image section, run with a stub `docker` on PATH (pure logic:
    the real run needs a daemon): the digest is neither local nor pullable, the tag is (an earlier
    stand-in), so the builds get PYTHON_IMAGE=<tag>, by argument and by a compose override file."""
    script = (ROOT / "scripts" / "container-test.sh").read_text()
    section = script[script.index("BASE=$(sed"):script.index("BASE_BYTES=")]
    stub = tmp_path / "bin" / "docker"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\ncase "$*" in\n'
                    '  "image inspect python:3.11-slim") exit 0 ;;\n  *) exit 1 ;;\nesac\n')
    stub.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    probe = (f"set -euo pipefail\nlog() {{ :; }}\nfail() {{ echo FAIL; exit 1; }}\nREBUILD_BASE=0 SUDO= WORK={work}\n"
             f"{section}\necho \"BASE=$BASE\"; echo \"ARGS=${{BUILD_ARGS[*]}}\"; echo \"OVERRIDE=$COMPOSE_STANDIN\"\n")
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{stub.parent}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls")})
    assert out.returncode == 0, out.stdout + out.stderr
    digest_ref = PINNED_BASE.search((ROOT / "Dockerfile").read_text())[0].split("=", 1)[1]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:2] == [f"image inspect {digest_ref}", f"pull -q {digest_ref}"]
    assert "BASE=python:3.11-slim\n" in out.stdout
    assert "ARGS=--build-arg PYTHON_IMAGE=python:3.11-slim\n" in out.stdout
    override = yaml.safe_load((work / "compose.standin-base.yml").read_text())
    assert {svc: o["build"]["args"]["PYTHON_IMAGE"] for svc, o in override["services"].items()} == {
        "mlflow": "python:3.11-slim", "train": "python:3.11-slim", "predict": "python:3.11-slim"}


def test_the_workflow_audits_every_lock_category_strictly_before_the_tests():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    names = [s.get("name", "") for s in steps]
    audit = next(i for i, n in enumerate(names) if n.startswith("Audit the lock"))
    tests = next(i for i, n in enumerate(names) if n.startswith("Test suite"))
    assert audit < tests
    run_script = steps[audit]["run"]
    assert "pip-audit --strict" in run_script and "--categories" in run_script
    assert "|| status=1" in run_script and 'exit "$status"' in run_script  # every category, then fail
    # The category list comes from the lock itself: evaluate the step's own one-liner here.
    (one_liner,) = re.findall(r"python3 -c '([^']+)'", run_script)
    listed = subprocess.run([sys.executable, "-c", one_liner], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    lock = json.loads((ROOT / "Pipfile.lock").read_text())
    assert len(listed) == len(lock) - 1 and {"packages", "dev-packages", "iac"} <= set(listed)
    assert "publish" in workflow["jobs"] and "test" in workflow["jobs"]["publish"]["needs"]
