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

pytestmark = pytest.mark.untraced
"""Rendered manifests parsed and schema-checked in Python here: no service code runs in this process
worth a coverage line, and the tracer doubled the parsing (tests/support.py ``untraced``)."""

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
    # /model is not on the ingress: the notes reach it through a port-forward, never the public host
    assert "https://ride-duration.accept.example.com/model" not in out
    assert "port-forward svc/ride-duration 9696:80" in out and "http://127.0.0.1:9696/model" in out
    assert "kubectl label namespace ride-duration-accept pod-security.kubernetes.io/enforce=restricted" in out
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


# --- the edge: network policies, ingress, pod security, API tokens (issue 18) ---------------------------

def selects(selector: dict[str, t.Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) applied to ``labels``."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:
            return False
    return True


def peer_admits(peer: dict[str, t.Any], ns: dict[str, str], pod: dict[str, str], own_ns: str) -> bool:
    if "ipBlock" in peer:
        return False  # these tests ask about pods; addresses are checked separately
    if "namespaceSelector" in peer:
        in_ns = selects(peer["namespaceSelector"], ns)
    else:
        in_ns = ns.get("kubernetes.io/metadata.name") == own_ns
    return in_ns and selects(peer.get("podSelector"), pod)


def allowed(policy: dict[str, t.Any], direction: str, ns: str, pod: dict[str, str], port: int,
            own_ns: str = "") -> bool:
    """Whether ``policy`` lets traffic from/to a pod (labels ``pod``) in namespace ``ns`` on ``port``."""
    key, peers_key = ("ingress", "from") if direction == "in" else ("egress", "to")
    ns_labels = {"kubernetes.io/metadata.name": ns}
    for rule in policy["spec"].get(key) or []:
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        peers = rule.get(peers_key)
        if not peers or any(peer_admits(p, ns_labels, pod, own_ns) for p in peers):
            return True
    return False


def all_policies(renders: dict[str | None, str], kustomized: dict[str | None, str]) -> dict[str, dict[str, t.Any]]:
    """Every NetworkPolicy the project ships: both renders of every environment, stream and retrain."""
    found = {}
    for side, texts in (("helm", renders), ("kustomize", kustomized)):
        for env, text in texts.items():
            for o in docs(text):
                if o["kind"] == "NetworkPolicy":
                    found[f"{side}/{env or 'default'}/{o['metadata']['name']}"] = o
    for extra in ("k8s/stream", "k8s/retrain"):
        for o in docs(run(tool("kubectl"), "kustomize", extra)):
            if o["kind"] == "NetworkPolicy":
                found[f"{extra}/{o['metadata']['name']}"] = o
    return found


def test_every_network_policy_rule_names_its_peers(renders, kustomized) -> None:
    """A rule without from/to admits any pod or address: none may exist, in any render."""
    policies = all_policies(renders, kustomized)
    assert len(policies) >= 2 * 5 + 2 + 5 * 2  # api per render, stream, retrain, the 2 test hooks per helm render
    for name, policy in policies.items():
        spec = policy["spec"]
        assert set(spec["policyTypes"]) >= {"Ingress"}, name
        for rule in spec.get("ingress") or []:
            assert rule.get("from"), f"{name}: an ingress rule admits everybody"
        for rule in spec.get("egress") or []:
            assert rule.get("to"), f"{name}: an egress rule allows every address"
            for peer in rule["to"]:
                if "ipBlock" in peer:  # only public addresses: no cluster ranges, no cloud metadata
                    assert peer["ipBlock"]["cidr"] != "0.0.0.0/0" or {"10.0.0.0/8", "169.254.0.0/16"} <= set(
                        peer["ipBlock"].get("except", [])), name


API = {"app.kubernetes.io/name": "ride-duration", "app.kubernetes.io/instance": "ride-duration",
       "app.kubernetes.io/part-of": "nyc-taxi", "app.kubernetes.io/component": "api"}


@pytest.mark.parametrize("env", [None, *ENVS], ids=lambda e: e or "default")
def test_the_api_admits_only_the_ingress_controller_and_prometheus_and_reaches_only_dns_and_mlflow(
        renders, kustomized, env) -> None:
    for side, text in (("helm", renders[env]), ("kustomize", kustomized[env])):
        (policy,) = [o for o in docs(text) if o["kind"] == "NetworkPolicy"
                     and "helm.sh/hook" not in o["metadata"].get("annotations", {})]
        assert selects(policy["spec"]["podSelector"], API), side
        own = namespace(env)
        ingress_nginx = {"app.kubernetes.io/name": "ingress-nginx"}
        prometheus = {"app.kubernetes.io/name": "prometheus"}
        assert allowed(policy, "in", "ingress-nginx", ingress_nginx, 9696), side
        assert allowed(policy, "in", "monitoring", prometheus, 9696), side
        assert not allowed(policy, "in", "ingress-nginx", ingress_nginx, 8080), side  # the HTTP port only
        assert not allowed(policy, "in", own, API, 9696, own), side  # not even a neighbour
        assert not allowed(policy, "in", own, {"app": "anything"}, 9696, own), side
        assert not allowed(policy, "in", "default", ingress_nginx, 9696), side  # right pod label, wrong namespace
        assert not allowed(policy, "in", "ingress-nginx", prometheus, 9696), side
        mlflow = {"app.kubernetes.io/name": "mlflow"}
        assert allowed(policy, "out", "mlflow", mlflow, 5000), side
        assert allowed(policy, "out", "kube-system", {"k8s-app": "kube-dns"}, 53), side
        assert not allowed(policy, "out", "mlflow", mlflow, 443), side
        assert not allowed(policy, "out", "mlflow", API, 5000), side  # kustomize must not rewrite the peer
        assert not allowed(policy, "out", own, API, 5000, own), side
        assert not allowed(policy, "out", "kube-system", {"k8s-app": "kube-dns"}, 443), side
        addresses = [p for r in policy["spec"].get("egress", []) for p in r["to"] if "ipBlock" in p]
        assert addresses == [], side  # the artifact store is a value, empty by default


def test_the_stream_and_retrain_policies_reach_only_their_peers() -> None:
    (stream,) = [o for o in docs(run(tool("kubectl"), "kustomize", "k8s/stream")) if o["kind"] == "NetworkPolicy"]
    assert allowed(stream, "in", "monitoring", {"app.kubernetes.io/name": "prometheus"}, 9102)
    assert not allowed(stream, "in", "ride-duration", API, 9102, "ride-duration")
    assert allowed(stream, "out", "kafka", {"app.kubernetes.io/name": "kafka"}, 9092)
    assert allowed(stream, "out", "mlflow", {"app.kubernetes.io/name": "mlflow"}, 5000)
    assert not allowed(stream, "out", "mlflow", {"app.kubernetes.io/name": "ride-duration"}, 5000)
    assert not allowed(stream, "out", "kafka", {"app.kubernetes.io/name": "kafka"}, 443)
    (retrain,) = [o for o in docs(run(tool("kubectl"), "kustomize", "k8s/retrain")) if o["kind"] == "NetworkPolicy"]
    assert retrain["spec"]["ingress"] == []
    assert allowed(retrain, "out", "mlflow", {"app.kubernetes.io/name": "mlflow"}, 5000)
    (https,) = [r for r in retrain["spec"]["egress"] if r["ports"] == [{"port": 443, "protocol": "TCP"}]]
    (block,) = [p["ipBlock"] for p in https["to"]]
    assert "169.254.0.0/16" in block["except"] and "10.0.0.0/8" in block["except"]


def test_the_artifact_store_peers_are_a_value_and_a_peer_without_ports_is_refused(helm_home, tmp_path) -> None:
    o = objects(helm_render(helm_home, "prod", "--set-json",
                            'networkPolicy.egress.artifactStore.to=[{"ipBlock":{"cidr":"52.218.0.0/17"}}]'))
    egress = o["NetworkPolicy"]["spec"]["egress"]
    assert egress[-1] == {"to": [{"ipBlock": {"cidr": "52.218.0.0/17"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    none = objects(helm_render(helm_home, "prod", "--set-json", "networkPolicy.ingressFrom=[]",
                               "--set-json", "networkPolicy.egress.mlflow.to=[]"))["NetworkPolicy"]["spec"]
    assert none["ingress"] == [] and [r["ports"][0]["port"] for r in none["egress"]] == [53]  # deny, not "any"
    values = tmp_path / "portless.yaml"
    values.write_text("networkPolicy:\n  egress:\n    artifactStore:\n      to: [{ipBlock: {cidr: 10.1.0.0/16}}]\n"
                      "      ports: []\n")
    proc = subprocess.run([str(HELM), "template", RELEASE, str(CHART), "-f", str(values)], capture_output=True,
                          text=True, env={"HOME": str(helm_home), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode != 0 and "peers without ports would allow every port" in proc.stderr


def routed(ingress: dict[str, t.Any], path: str) -> bool:
    """Kubernetes' Ingress path matching: Exact is equality, Prefix matches whole path elements."""
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            if p["pathType"] == "Exact" and path == p["path"]:
                return True
            if p["pathType"] == "Prefix":
                prefix = [e for e in p["path"].split("/") if e]
                if [e for e in path.split("/") if e][:len(prefix)] == prefix:
                    return True
    return False


def app_routes() -> list[tuple[str, str]]:
    """(an example path, its endpoint) for every route of the real app."""
    from ride_duration.app import create_app

    app = create_app({"mlflow_tracking_uri": None})
    return [(re.sub(r"<[^>]+>", "x", r.rule), r.endpoint) for r in app.url_map.iter_rules()]


@pytest.mark.parametrize("env", ENVS)
def test_the_ingress_publishes_the_prediction_routes_and_nothing_else_over_tls(renders, kustomized, env) -> None:
    from ride_duration.web.auth import PREDICTION_ENDPOINTS

    routes = app_routes()
    for side, text in (("helm", renders[env]), ("kustomize", kustomized[env])):
        ingress = objects(text)["Ingress"]
        for path, endpoint in routes:
            published = routed(ingress, path)
            if endpoint in PREDICTION_ENDPOINTS:
                assert published, f"{side}/{env}: {path} ({endpoint}) is not on the ingress"
            elif not path.startswith("/v2"):  # the V2 protocol's health and metadata ride along with infer
                assert not published, f"{side}/{env}: {path} ({endpoint}) must stay inside the cluster"
        for inside in ("/metrics", "/model", "/docs", "/docs/swagger-ui.css", "/openapi.json", "/ready", "/"):
            assert not routed(ingress, inside), (side, env, inside)
        hosts = {r["host"] for r in ingress["spec"]["rules"]}
        covered = {h for entry in ingress["spec"].get("tls", []) for h in entry["hosts"]}
        assert hosts and hosts <= covered, f"{side}/{env}: hosts without TLS: {hosts - covered}"
        assert all(entry["secretName"] for entry in ingress["spec"]["tls"])


@pytest.mark.parametrize("path", ["/", "/metrics", "/model/"])
def test_the_chart_refuses_to_publish_an_internal_route(helm_home, tmp_path, path) -> None:
    values = tmp_path / "open.yaml"
    values.write_text(f"ingress:\n  enabled: true\n  hosts:\n    - host: a.example.com\n      paths:\n"
                      f"        - path: {path}\n")
    proc = subprocess.run([str(HELM), "template", RELEASE, str(CHART), "-f", str(values)], capture_output=True,
                          text=True, env={"HOME": str(helm_home), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode != 0 and "would publish an internal route" in proc.stderr


@pytest.mark.parametrize("env", [None, *ENVS], ids=lambda e: e or "default")
def test_the_namespace_enforces_the_restricted_pod_security_profile(kustomized, env) -> None:
    (ns,) = [o for o in docs(kustomized[env]) if o["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == namespace(env)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def restricted_violations(pod: dict[str, t.Any]) -> list[str]:
    """What the Pod Security Standard "restricted" (v1.30) refuses, for one pod spec."""
    out = []
    psc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(flag)
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            out.append(f"volume {volume['name']}: {kinds}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            out.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{c['name']}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{c['name']}: capabilities added")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append(f"{c['name']}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile {seccomp}")
        if any("hostPort" in p for p in c.get("ports", [])):
            out.append(f"{c['name']}: hostPort")
    return out


def pod_specs(o: dict[str, t.Any]) -> dict[str, t.Any] | None:
    kind = o["kind"]
    if kind == "Pod":
        return o["spec"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return o["spec"]["template"]["spec"]
    if kind == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def test_every_pod_the_project_ships_meets_the_restricted_profile(renders, kustomized, secrets_render) -> None:
    texts = [*renders.values(), *kustomized.values(), secrets_render,
             run(tool("kubectl"), "kustomize", "k8s/stream"), run(tool("kubectl"), "kustomize", "k8s/retrain")]
    pods = [(o["kind"], o["metadata"]["name"], spec) for text in texts for o in docs(text)
            if (spec := pod_specs(o)) is not None]
    assert {kind for kind, _, _ in pods} == {"Deployment", "Pod", "CronJob"}
    problems = [f"{kind}/{name}: {v}" for kind, name, spec in pods for v in restricted_violations(spec)]
    assert not problems, problems
    worse = copy.deepcopy(pods[0][2])
    worse["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    worse["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(worse)) == 2  # the checker does catch what it looks for


def test_api_tokens_from_a_secret_reach_the_service_and_the_test_pod(helm_home) -> None:
    text = helm_render(helm_home, "prod", "--set", "auth.existingSecret=api-tokens")
    o = objects(text)
    pod = o["Deployment"]["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in api["env"]}
    mount = {m["name"]: m for m in api["volumeMounts"]}["api-tokens"]
    assert mount["readOnly"] is True
    assert env["API_TOKENS_FILE"] == f"{mount['mountPath']}/tokens"
    assert {"name": "api-tokens", "secret": {"secretName": "api-tokens", "items": [
        {"key": "tokens", "path": "tokens"}]}} in pod["volumes"]
    (test_pod,) = [d for d in docs(text) if d["kind"] == "Pod"]
    test_env = {e["name"]: e for e in test_pod["spec"]["containers"][0]["env"]}
    assert test_env["AUTH_REQUIRED"]["value"] == "true"
    assert test_env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "api-tokens", "key": "test-token",
                                                                   "optional": True}
    run(tool("kubernetes-validate"), "--strict", "-", stdin=text)
    notes = objects(helm_render(helm_home, "prod"))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "API_TOKENS_FILE" not in {e["name"] for e in notes["env"]}  # off by default


def test_helm_test_hook_with_api_tokens_sends_the_test_token_or_expects_401(renders, tmp_path_factory) -> None:
    """The hook's script against real gunicorn with API_TOKENS_FILE: with the test token it predicts,
    without one it passes only on a 401, with a wrong one it fails."""
    from tests.support import running

    (pod,) = [o for o in docs(renders["prod"]) if o["kind"] == "Pod"]
    script = pod["spec"]["containers"][0]["command"][2]
    tokens = tmp_path_factory.mktemp("api-tokens") / "tokens"
    tokens.write_text("hook-test-token-9c1e\n")
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": "", "API_TOKENS_FILE": str(tokens)}, workers=1) as srv:
        def hook(**env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([tool("python"), "-c", script], env={"PREDICT_URL": srv.url + "/predict", **env},
                                  capture_output=True, text=True, timeout=60)

        good = hook(AUTH_REQUIRED="true", API_TOKEN="hook-test-token-9c1e")
        assert good.returncode == 0 and good.stdout.startswith("200 {'duration': "), good.stdout + good.stderr
        anonymous = hook(AUTH_REQUIRED="true")
        assert anonymous.returncode == 0 and anonymous.stdout.startswith("401 "), anonymous.stdout
        wrong = hook(AUTH_REQUIRED="true", API_TOKEN="not-the-token")
        assert wrong.returncode != 0 and wrong.stdout.startswith("401 ")
        unexpected = hook()  # auth on in the service but the chart thinks it is off: a failed test
        assert unexpected.returncode != 0
