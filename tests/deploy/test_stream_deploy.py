"""Deployment of the streaming parts: the k8s/stream/ overlay (validated like the base), the compose
``stream`` profile, and the Dockerfile's ``stream`` and ``lambda`` targets, checked against the code
they run (the CLI parser, the handler's import path, the settings' bounds)."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import yaml

from ride_duration.__main__ import parse_args
from ride_duration.config import Settings
from tests.deploy.test_deploy_configs import checkov, run, tool
from tests.support import ROOT


@pytest.fixture(scope="module")
def rendered_stream() -> str:
    return run(tool("kubectl"), "kustomize", "k8s/stream")


@pytest.fixture(scope="module")
def stream_docs(rendered_stream: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(rendered_stream) if doc}


def test_k8s_stream_passes_strict_schema_validation(rendered_stream, tmp_path):
    path = tmp_path / "stream.yaml"
    path.write_text(rendered_stream)
    run(tool("kubernetes-validate"), "--strict", str(path))


def test_checkov_k8s_stream(rendered_stream, tmp_path):
    path = tmp_path / "stream.yaml"
    path.write_text(rendered_stream)
    run(checkov(), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes", "-f", str(path))


def test_k8s_stream_follows_the_services_alias_and_its_args_parse(stream_docs):
    base = {doc["kind"]: doc for doc in yaml.safe_load_all(run(tool("kubectl"), "kustomize", "k8s")) if doc}
    assert stream_docs["ConfigMap"]["data"]["MODEL_URI"] == base["ConfigMap"]["data"]["MODEL_URI"]
    assert stream_docs["Deployment"]["metadata"]["namespace"] == base["Namespace"]["metadata"]["name"]
    container = stream_docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = stream_docs["ConfigMap"]["data"]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    parsed = parse_args(["stream", *args])
    assert parsed.source.topic == "rides" and parsed.sink.topic == "ride-predictions"
    settings = Settings(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})
    assert container["ports"][0]["containerPort"] == settings.stream_metrics_port
    grace = stream_docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.stream_shutdown_timeout


def test_compose_stream_profile(monkeypatch):
    from tests.deploy.test_deploy_configs import compose_clis

    clis = compose_clis()
    assert clis, "no compose CLI"
    monkeypatch.setenv("TLC_DATA_DIR", "/tmp")
    for cli in clis:
        for files in (("docker-compose.yml", "docker-compose.override.yml"),
                      ("docker-compose.yml", "docker-compose.hostnet.yml")):
            rendered = yaml.safe_load(run(*cli, *[a for f in files for a in ("-f", f)], "--profile", "stream",
                                          "config"))
            stream = rendered["services"]["stream"]
            parsed = parse_args(["stream", *stream["command"]])
            assert parsed.source.topic == "rides"
            assert stream["environment"]["MODEL_URI"] == rendered["services"]["predict"]["environment"]["MODEL_URI"]
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["stream"]["profiles"] == ["stream"] and services["kafka"]["profiles"] == ["stream"]
    grace = int(services["stream"]["stop_grace_period"].rstrip("s"))
    assert grace > Settings().stream_shutdown_timeout


def instructions(stage: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one Dockerfile stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else None
        if current == stage:
            out.append((word.upper(), rest))
    return out


def test_dockerfile_stream_and_lambda_targets_run_what_exists():
    stream = dict(instructions("stream"))
    assert json.loads(stream["ENTRYPOINT"]) == ["python", "-m", "ride_duration", "stream"]
    assert stream["USER"].startswith("10001")
    lam = dict(instructions("lambda"))
    assert json.loads(lam["ENTRYPOINT"]) == ["python", "-m", "awslambdaric"]
    module, _, function = json.loads(lam["CMD"])[0].rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    assert any(cmd == "RUN" and '"packages lambda"' in rest for cmd, rest in instructions("lambda-deps"))
    assert any(cmd == "RUN" and '"packages stream"' in rest for cmd, rest in instructions("stream-deps"))
    # the service image stays without the Kafka client and the AWS SDK
    assert not any('"packages stream"' in rest or '"packages lambda"' in rest for _, rest in instructions("deps"))
