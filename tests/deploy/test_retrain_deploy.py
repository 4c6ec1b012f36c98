"""The scheduled retraining's deployment files: k8s/retrain/ (its own kustomization) and the compose profile."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.test_deploy_configs import checkov, compose_clis, run, tool
from tests.support import ROOT


@pytest.fixture(scope="module")
def rendered() -> str:
    return run(tool("kubectl"), "kustomize", "k8s/retrain")


def test_retrain_kustomization_passes_strict_schema_validation(rendered):
    run(tool("kubernetes-validate"), "--strict", "-", stdin=rendered)


def test_cronjob_runs_retrain_on_the_training_image_and_ends_on_decisions(rendered):
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered) if doc}
    assert set(docs) == {"ConfigMap", "CronJob", "NetworkPolicy"}  # no Deployment: not a copy of the base
    cron = docs["CronJob"]
    assert cron["metadata"]["namespace"] == "ride-duration"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "python", "-m", "ride_duration", "retrain", "--month", "latest", "--report-dir", "/reports"]
    assert container["image"].startswith("docker.io/ride-duration/ride-duration-train:")
    assert container["envFrom"][0]["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert {"MLFLOW_TRACKING_URI", "MODEL_NAME", "TLC_DATA_DIR"} <= set(docs["ConfigMap"]["data"])
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2, 3]  # no data, kept champion
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/reports"} <= mounts
    labels = job["template"]["metadata"]["labels"]
    assert docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_base_does_not_include_retraining():
    base = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert not any("retrain" in str(resource) for resource in base["resources"])


def test_compose_retrain_profile(monkeypatch):
    clis = compose_clis()
    assert clis, "neither `docker compose` (v2) nor docker-compose (1.29, apt) is installed"
    monkeypatch.setenv("TLC_DATA_DIR", str(ROOT))
    for cli in clis:
        out = subprocess.run([*cli, "-f", "docker-compose.yml", "--profile", "retrain", "config"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        service = yaml.safe_load(out.stdout)["services"]["retrain"]
        assert service["profiles"] == ["retrain"]
        assert "python -m ride_duration retrain" in " ".join(service["command"])
        assert service["environment"]["RETRAIN_MONTH"] == "latest"
        assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"


@pytest.mark.slow
def test_checkov_retrain(rendered, tmp_path):
    manifest = tmp_path / "retrain.yaml"
    manifest.write_text(rendered)
    run(checkov(), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes", "-f", str(manifest))
