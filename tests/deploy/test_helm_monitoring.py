"""The chart's monitoring objects: ServiceMonitor, PrometheusRule and the Grafana dashboard ConfigMap.

Rendered with ``helm template`` and the monitoring values; the monitoring.coreos.com objects are
validated against the Prometheus Operator's CRD schemas (scripts/validate-prometheus-crds.mjs with
the pinned @kubernetes-models/prometheus-operator, ``make tools``), the rest with
``kubernetes-validate --strict`` like every other render. The PrometheusRule must carry exactly the
rules of deploy/prometheus/rules.yml (one file: the chart's files/prometheus-rules.yml, symlinked).
"""

from __future__ import annotations

import json
import subprocess
import typing as t
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_deploy_configs import run, tool
from tests.deploy.test_helm_chart import CHART, ENVS, HELM, by_key, docs, helm, helm_render
from tests.support import ROOT

pytestmark = pytest.mark.untraced  # as tests/deploy/test_helm_chart.py: manifests parsed here, no service code

NODE = ROOT / ".tools" / "bin" / "node"
VALIDATOR = ROOT / "scripts" / "validate-prometheus-crds.mjs"
MODELS = ROOT / ".tools" / "prometheus-operator"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ride-duration.json"
MONITORING = ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.prometheusRule.enabled=true",
              "--set", "monitoring.dashboard.enabled=true",
              "--set-json", 'monitoring.serviceMonitor.labels={"release":"kube-prometheus-stack"}']


def validate_crds(objects: list[dict[str, t.Any]]) -> subprocess.CompletedProcess[str]:
    assert NODE.exists() and MODELS.exists(), "run `make tools` (scripts/install-tools.sh): node + CRD schemas"
    return subprocess.run([str(NODE), str(VALIDATOR)], input=json.dumps(objects), capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert HELM.exists(), f"{HELM} missing: run `make tools` (scripts/install-tools.sh)"
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def monitoring(helm_home: Path) -> dict[tuple[str, str], dict[str, t.Any]]:
    return by_key(docs(helm_render(helm_home, None, *MONITORING)))


def test_monitoring_is_off_by_default(helm_home) -> None:
    for env in [None, *ENVS]:
        text = helm_render(helm_home, env)
        kinds = {o["kind"] for o in docs(text)}
        assert not kinds & {"ServiceMonitor", "PrometheusRule"}, env
        assert not any(o["metadata"]["name"].endswith("-dashboard") for o in docs(text)), env


@pytest.mark.parametrize("env", [None, "dev", "prod"], ids=lambda e: e or "default")
def test_monitoring_renders_valid_objects_against_the_operator_crd_schemas(helm_home, env) -> None:
    objects = docs(helm_render(helm_home, env, *MONITORING))
    crds = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(o["kind"] for o in crds) == ["PrometheusRule", "ServiceMonitor"]
    proc = validate_crds(objects)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 monitoring.coreos.com object(s) checked, 0 invalid" in proc.stdout, proc.stdout
    rest = [o for o in objects if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    run(tool("kubernetes-validate"), "--strict", "-", stdin=yaml.safe_dump_all(rest))
    lint = helm(helm_home, "lint", "--strict", str(CHART), *MONITORING,
                *(["-f", str(CHART / f"values-{env}.yaml")] if env else []))
    assert "0 chart(s) failed" in lint


def test_the_crd_validation_rejects_what_the_operator_would(monitoring) -> None:
    rule = json.loads(json.dumps(monitoring[("PrometheusRule", "ride-duration")]))
    rule["spec"]["groups"][1]["rules"][0]["for"] = "2 minutes"
    monitor = json.loads(json.dumps(monitoring[("ServiceMonitor", "ride-duration")]))
    monitor["spec"]["endpoints"][0]["port"] = 9696  # a name, not a number
    proc = validate_crds([rule, monitor])
    assert proc.returncode == 1
    assert "INVALID PrometheusRule/ride-duration" in proc.stdout and "/for must match pattern" in proc.stdout
    assert "INVALID ServiceMonitor/ride-duration" in proc.stdout and "port must be string" in proc.stdout
    unknown = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitr", "metadata": {"name": "x"}}
    assert validate_crds([unknown]).returncode == 1


def test_the_prometheus_rule_is_the_rules_file(monitoring) -> None:
    assert RULES.is_symlink() and RULES.resolve() == (CHART / "files" / "prometheus-rules.yml").resolve()
    rendered = monitoring[("PrometheusRule", "ride-duration")]["spec"]["groups"]
    assert rendered == yaml.safe_load(RULES.read_text())["groups"]
    # the annotations' Go templates reach the operator untouched (Helm does not evaluate them)
    summaries = [r["annotations"]["summary"] for g in rendered for r in g["rules"] if "alert" in r]
    assert "ride-duration target {{ $labels.instance }} is down" in summaries


def test_runbook_base_url_points_the_runbooks_at_the_docs_site(helm_home) -> None:
    objects = by_key(docs(helm_render(helm_home, None, *MONITORING, "--set",
                                      "monitoring.runbookBaseUrl=https://docs.example.com/operations/")))
    urls = [r["annotations"]["runbook_url"] for g in objects[("PrometheusRule", "ride-duration")]["spec"]["groups"]
            for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith("https://docs.example.com/operations/#ride") for u in urls), urls


def test_the_service_monitor_selects_the_service_and_its_port(monitoring) -> None:
    monitor = monitoring[("ServiceMonitor", "ride-duration")]
    service = monitoring[("Service", "ride-duration")]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["ride-duration"]


def test_the_dashboard_configmap_carries_the_dashboard_file(monitoring) -> None:
    assert DASHBOARD.is_symlink() and DASHBOARD.resolve() == (CHART / "files" / "grafana-dashboard.json").resolve()
    configmap = monitoring[("ConfigMap", "ride-duration-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["ride-duration.json"]) == json.loads(DASHBOARD.read_text())
