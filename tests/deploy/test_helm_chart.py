"""The Helm chart (charts/ride-duration): lint, valid renders per environment, no drift from k8s/.

``helm`` is the project's pinned binary in ``.tools/bin`` (``make tools``; scripts/install-tools.sh),
run with a throw-away HOME. Drift: ``helm template`` with values.yaml is compared, object by object
and field by field, with ``kubectl kustomize k8s/base``, and each ``values-<env>.yaml`` with
``k8s/overlays/<env>``. What may differ is listed in :func:`normalise` (Helm's bookkeeping labels,
the config checksum annotation, kustomize's hashed ConfigMap name, the Namespace object and the
checkov skip annotations' wording); everything else must be equal.
"""

from __future__ import annotations

import copy
import re
import subprocess
import typing as t
from pathlib import Path

import pytest
import yaml

from ride_duration.jobs.environments import ENVIRONMENTS
from tests.deploy.test_deploy_configs import checkov, run, tool
from tests.support import ROOT, free_port

CHART = ROOT / "charts" / "ride-duration"
HELM = ROOT / ".tools" / "bin" / "helm"
ENVS = ["dev", "test", "accept", "prod"]
RELEASE = "ride-duration"
HASHED = re.compile(r"^(ride-duration-registry)-[a-z0-9]{10}$")


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert HELM.exists(), f"{HELM} missing: run `make tools` (scripts/install-tools.sh)"
    return tmp_path_factory.mktemp("helm-home")


def helm(home: Path, *args: str) -> str:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    proc = subprocess.run([str(HELM), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def namespace(env: str | None) -> str:
    return f"ride-duration-{env}" if env else "ride-duration"


def helm_render(home: Path, env: str | None, *extra: str) -> str:
    values = ["-f", str(CHART / f"values-{env}.yaml")] if env else []
    return helm(home, "template", RELEASE, str(CHART), "-n", namespace(env), *values, *extra)


def docs(text: str) -> list[dict[str, t.Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_key(objects: list[dict[str, t.Any]]) -> dict[tuple[str, str], dict[str, t.Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module")
def renders(helm_home: Path) -> dict[str | None, str]:
    return {env: helm_render(helm_home, env) for env in [None, *ENVS]}


@pytest.fixture(scope="module")
def kustomized() -> dict[str | None, str]:
    kubectl = tool("kubectl")
    return {env: run(kubectl, "kustomize", f"k8s/overlays/{env}" if env else "k8s/base") for env in [None, *ENVS]}


def strip_hash(name: str) -> str:
    match = HASHED.match(name)
    return match[1] if match else name


def normalise(obj: dict[str, t.Any], helm_side: bool) -> dict[str, t.Any]:
    """The fields both renders must agree on (see the module docstring for what is dropped)."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta["name"] = strip_hash(meta["name"])
    labels = meta.get("labels", {})
    if helm_side:  # Helm's bookkeeping; the four k8s/ labels must be there and equal
        for key in ("helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):
            labels.pop(key, None)
        labels.pop("app.kubernetes.io/component", None)
    meta.pop("annotations", None)  # only checkov skip notes on either side (their wording differs)
    if obj["kind"] == "Deployment":
        pod = obj["spec"]["template"]
        pod["metadata"].get("annotations", {}).pop("checksum/registry-config", None)
        for c in pod["spec"]["containers"]:
            c["env"] = sorted(c["env"], key=lambda e: e["name"])
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    source["configMapRef"]["name"] = strip_hash(source["configMapRef"]["name"])
    return obj


def comparable(text: str, helm_side: bool) -> dict[tuple[str, str], dict[str, t.Any]]:
    objects = docs(text)
    if helm_side:
        objects = [o for o in objects if "helm.sh/hook" not in o["metadata"].get("annotations", {})]
    else:  # Helm does not own namespaces: `helm upgrade --install --create-namespace`
        objects = [o for o in objects if o["kind"] != "Namespace"]
    return by_key([normalise(o, helm_side) for o in objects])


def diff(a: t.Any, b: t.Any, path: str = "") -> list[str]:
    """Every path where two YAML trees differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}.{key}: helm={a.get(key, '<absent>')!r} kustomize={b.get(key, '<absent>')!r}")
            else:
                out += diff(a[key], b[key], f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: helm={a!r} kustomize={b!r}"]


# --- lint and validity ------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [None, *ENVS], ids=lambda e: e or "default")
def test_helm_lint_strict(helm_home, env) -> None:
    values = ["-f", str(CHART / f"values-{env}.yaml")] if env else []
    out = helm(helm_home, "lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_every_render_passes_strict_schema_validation(renders, kustomized, secrets_render) -> None:
    everything = "\n---\n".join([*renders.values(), *kustomized.values(), secrets_render])
    run(tool("kubernetes-validate"), "--strict", "-", stdin=everything)


@pytest.mark.slow
def test_checkov_passes_on_every_environment_render(renders, tmp_path) -> None:
    manifest = tmp_path / "helm.yaml"
    manifest.write_text("\n---\n".join(renders.values()))
    run(checkov(), "--skip-download", "--quiet", "--compact", "--framework", "kubernetes", "-f", str(manifest))


# --- no drift from k8s/ ------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [None, *ENVS], ids=lambda e: e or "default")
def test_helm_and_kustomize_render_the_same_objects(renders, kustomized, env) -> None:
    ours, theirs = comparable(renders[env], True), comparable(kustomized[env], False)
    assert sorted(ours) == sorted(theirs), f"objects differ: helm={sorted(ours)} kustomize={sorted(theirs)}"
    problems = [f"{kind}/{name}{d}" for (kind, name) in ours for d in diff(ours[kind, name], theirs[kind, name])]
    assert not problems, "helm and kustomize disagree:\n" + "\n".join(problems)


def test_the_comparison_catches_a_drift(helm_home, kustomized) -> None:
    drifted = comparable(helm_render(helm_home, "prod", "--set", "resources.limits.memory=2Gi"), True)
    theirs = comparable(kustomized["prod"], False)
    found = diff(drifted["Deployment", RELEASE], theirs["Deployment", RELEASE])
    assert found == [".spec.template.spec.containers[0].resources.limits.memory: helm='2Gi' kustomize='1Gi'"]


# --- the environments ---------------------------------------------------------------------------------

def objects(text: str) -> dict[str, dict[str, t.Any]]:
    return {o["kind"]: o for o in docs(text) if "helm.sh/hook" not in o["metadata"].get("annotations", {})}


def test_environments_differ_in_replicas_alias_resources_log_level_poll_and_host(renders) -> None:
    seen: dict[str, set[t.Any]] = {k: set() for k in ("replicas", "alias", "memory", "log", "poll", "host", "hpa")}
    for env in ENVS:
        o = objects(renders[env])
        container = o["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        config = o["ConfigMap"]["data"]
        assert config["MODEL_URI"] == f"models:/nyc-taxi-ride-duration@{ENVIRONMENTS[env]}"
        assert o["Deployment"]["metadata"]["namespace"] == namespace(env)
        hpa = o["HorizontalPodAutoscaler"]["spec"]
        assert hpa["minReplicas"] == o["Deployment"]["spec"]["replicas"] <= hpa["maxReplicas"]
        seen["replicas"].add(o["Deployment"]["spec"]["replicas"])
        seen["alias"].add(config["MODEL_URI"])
        seen["memory"].add(container["resources"]["limits"]["memory"])
        seen["log"].add({e["name"]: e.get("value") for e in container["env"]}["LOG_LEVEL"])
        seen["poll"].add(config["MODEL_POLL_SECONDS"])
        seen["host"].add(o["Ingress"]["spec"]["rules"][0]["host"])
        seen["hpa"].add((hpa["minReplicas"], hpa["maxReplicas"]))
        assert ("PodDisruptionBudget" in o) == (o["Deployment"]["spec"]["replicas"] > 1), env
    assert len(seen["alias"]) == len(seen["host"]) == len(seen["poll"]) == len(seen["hpa"]) == 4, seen
    assert len(seen["replicas"]) >= 3 and len(seen["memory"]) >= 2 and len(seen["log"]) == 3, seen


def test_values_files_follow_the_promotion_aliases() -> None:
    for env in ENVS:
        values = yaml.safe_load((CHART / f"values-{env}.yaml").read_text())
        assert values["registry"]["alias"] == ENVIRONMENTS[env], env


# --- templates that only Helm has ------------------------------------------------------------------------

def checksum(text: str) -> str:
    return objects(text)["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/registry-config"]


def test_a_registry_setting_change_rolls_the_pods_an_image_change_does_not_change_the_checksum(helm_home, renders):
    base = checksum(renders["prod"])
    assert checksum(helm_render(helm_home, "prod", "--set", "registry.pollSeconds=61")) != base
    assert checksum(helm_render(helm_home, "prod", "--set", "registry.alias=accept")) != base
    assert checksum(helm_render(helm_home, "prod", "--set", "image.tag=0.2.0")) == base


def test_image_digest_wins_over_tag(helm_home) -> None:
    digest = "sha256:" + "a" * 64
    o = objects(helm_render(helm_home, "prod", "--set", f"image.digest={digest}", "--set", "image.tag=9.9"))
    assert o["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"docker.io/ride-duration/ride-duration@{digest}"
    assert "checkov.io/skip1" not in o["Deployment"]["metadata"].get("annotations", {})


@pytest.fixture(scope="module")
def secrets_render(helm_home: Path) -> str:
    return helm_render(helm_home, "prod", "--set", "registry.existingSecret=mlflow-auth",
                       "--set", "artifactStore.s3.existingSecret=s3-keys", "--set", "artifactStore.s3.region=eu-west-1",
                       "--set", "artifactStore.s3.endpointUrl=http://minio:9000",
                       "--set", "artifactStore.gcs.existingSecret=gcs-key")


def test_secret_references_reach_the_container_without_values_in_the_chart(secrets_render) -> None:
    o = objects(secrets_render)
    pod = o["Deployment"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-auth", "key": key, "optional": True}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/run/secrets/gcs/credentials.json"
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/var/run/secrets/gcs"]["readOnly"] is True
    assert {"name": "gcs-credentials", "secret": {"secretName": "gcs-key", "items": [
        {"key": "credentials.json", "path": "credentials.json"}]}} in pod["volumes"]
    assert o["ConfigMap"]["data"]["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert o["ConfigMap"]["data"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "Secret" not in o  # the chart references secrets, it never creates or holds one


def render_notes(home: Path, tmp: Path, *args: str) -> str:
    """NOTES.txt as ``helm install`` prints it (that needs a cluster): the same text, rendered by
    ``helm template`` from a copy of the chart where it is a YAML block scalar."""
    import shutil

    chart = tmp / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    block = "".join(f"  {line}\n" for line in notes.splitlines())
    (chart / "templates" / "notes.yaml").write_text("notes: |\n" + block)
    (chart / "templates" / "NOTES.txt").unlink()
    out = helm(home, "template", RELEASE, str(chart), *args, "--show-only", "templates/notes.yaml")
    return yaml.safe_load(out)["notes"]


def test_notes_name_the_model_and_the_check_commands(helm_home, tmp_path) -> None:
    out = render_notes(helm_home, tmp_path, "-n", "ride-duration-accept", "-f", str(CHART / "values-accept.yaml"))
    assert "models:/nyc-taxi-ride-duration@accept" in out
    assert "helm test ride-duration -n ride-duration-accept" in out
    assert "curl -s -X POST https://ride-duration.accept.example.com/predict" in out
    assert "port-forward" not in out
    out = render_notes(helm_home, tmp_path / "default", "-n", "ride-duration")
    assert "port-forward svc/ride-duration 9696:80" in out and "http://127.0.0.1:9696/predict" in out


def test_helm_test_hook_posts_one_ride_and_fails_on_a_wrong_answer(renders, tmp_path_factory) -> None:
    """The hook pod's own script, run against the real service (gunicorn on loopback)."""
    from tests.support import running

    (pod,) = [o for o in docs(renders["prod"]) if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["env"][0] == {"name": "PREDICT_URL", "value": "http://ride-duration:80/predict"}
    command = container["command"]
    assert command[:2] == ["python", "-c"]
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": ""}, workers=1) as srv:
        ok = subprocess.run([tool("python"), "-c", command[2]], env={"PREDICT_URL": srv.url + "/predict"},
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("200 {'duration': ")
        wrong = subprocess.run([tool("python"), "-c", command[2]], env={"PREDICT_URL": srv.url + "/no-such-route"},
                               capture_output=True, text=True, timeout=60)
        assert wrong.returncode != 0
    down = subprocess.run([tool("python"), "-c", command[2]],
                          env={"PREDICT_URL": f"http://127.0.0.1:{free_port()}/predict"},
                          capture_output=True, text=True, timeout=60)
    assert down.returncode != 0
