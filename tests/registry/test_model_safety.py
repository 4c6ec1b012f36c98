"""Nothing from the registry runs code in the service (issue 18), against a real ``mlflow server``
and the real service (2 gevent workers under gunicorn) following ``@production``.

- a version whose pickle would create a file when loaded, tagged with its own correct sha256,
  moved to ``@production``: never loaded (the file is never created), every request keeps its
  200 from the previous version, ``/ready``, the log and ``ride_duration_model_rejections_total``
  name the refusal, and no worker tries the version again; the same for a pickle dressed as skops;
- with ``MODEL_SIGNING_KEY``: a correctly signed version is swapped in, an unsigned one and one
  carrying another version's signature are refused;
- what ``train.py --register`` (its ``main``, run in this process) puts in the registry holds no pickle;
- the pure parts: the skops allow-list, Ed25519 signing and key rotation, the bundled file's digest.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import typing as t
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ride_duration.config import Settings
from ride_duration.model.holder import ModelHolder, load_bundled
from ride_duration.model.loading import ModelLoadError, load_file
from ride_duration.registry import safe_format, signing
from ride_duration.registry.mlflow_model import SHA256_TAG, build_pipeline
from tests.conftest import BUNDLED, REFERENCE_RIDE
from tests.mlflow_server import MlflowServer
from tests.registry import test_registry as base
from tests.registry.test_registry import (
    ClientLoop,
    Service,
    fit,
    get_json,
    log_events,
    register,
    service_env,
    train_here,
    wait_until,
)
from tests.support import Server, http, untraced

registry, months, mlflow_client = base.registry, base.months, base.mlflow_client  # the same fixtures


class Touch:
    """Unpickling this creates ``path``: the harmless stand-in for "runs a shell command"."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[t.Any, tuple[str, str]]:
        return open, (self.path, "w")


def pem_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@untraced()  # set-up, not the subject
def register_file(name: str, blob: bytes, fmt: str) -> str:
    """A version whose model file is ``blob``, logged as MLflow's sklearn flavour says ``fmt`` files are,
    tagged with the blob's own correct sha256 (anyone who can write to the registry can do that)."""
    import mlflow
    import mlflow.sklearn

    dv, lr = pickle.loads((BUNDLED / "lin_reg.bin").read_bytes())  # noqa: S301 - our own bundled file
    pipeline = build_pipeline(dv, lr, load_file(BUNDLED / "lin_reg.bin").step)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        kwargs = {"skops_trusted_types": list(safe_format.MODEL_TYPES)} if fmt == "skops" else {}
        mlflow.sklearn.save_model(pipeline, str(path), serialization_format=fmt, pip_requirements=["scikit-learn"],
                                  **kwargs)
        (path / ("model.skops" if fmt == "skops" else "model.pkl")).write_bytes(blob)
        mlflow.set_experiment("safety-tests")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(path), "model")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    mlflow.MlflowClient().set_model_version_tag(name, version, SHA256_TAG, hashlib.sha256(blob).hexdigest())
    return version


def metric(url: str, name: str, labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    status, _, body = http("GET", url + "/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def refusals_on_every_worker(svc: Server, version: str, workers: int = 2) -> list[dict[str, t.Any]]:
    """Wait until each worker has logged its refusal of ``version``; returns the log records."""
    def seen() -> list[dict[str, t.Any]] | None:
        records = [r for r in log_events(svc, "model_rejected") if r.get("version") == version]
        return records if len({r["pid"] for r in records}) >= workers else None
    return wait_until(seen, 30, f"every worker to refuse version {version}")


def ready_names(url: str, version: str, code: str) -> dict[str, t.Any]:
    """``/ready`` from whichever worker answers: still ready, naming the refused version and why."""
    def check() -> dict[str, t.Any] | None:
        status, body = get_json(url + "/ready")
        assert status == 200, body
        hits = [r for r in body.get("refused", []) if r["version"] == version and r.get("code") == code]
        return body if hits else None
    return wait_until(check, 20, f"/ready to name refused version {version} ({code})")


def polls_pass(url: str, n: int) -> None:
    """Until the workers have polled the registry ``n`` more times (the counter, not a sleep)."""
    start = metric(url, "ride_duration_registry_checks_total", 'ok="true"')
    wait_until(lambda: metric(url, "ride_duration_registry_checks_total", 'ok="true"') >= start + n, 30,
               f"{n} more registry polls")


# ---- against a real registry and a 2-worker service ---------------------------------------------

def test_a_pickle_that_would_run_code_is_never_loaded_and_never_retried(
        registry: MlflowServer, months: dict[str, Path], mlflow_client: t.Any, tmp_path: Path) -> None:
    name = "pickle-attack"
    marker, control = tmp_path / "pwned", tmp_path / "control"
    pickle.loads(pickle.dumps(Touch(control)))  # noqa: S301 - proves the payload is live: it creates a file
    assert control.exists()
    dv, lr, _ = fit(months["weak"])
    assert register(name, dv, lr, months["valid"])[0] == "1"

    with Service(env=service_env(registry, name), workers=2, log_path=tmp_path / "service.log") as svc:
        loop = ClientLoop(svc.url).start()
        try:
            loop.wait_for(f"{name}-v1", n=20)
            evil = register_file(name, pickle.dumps(Touch(marker)), "cloudpickle")
            mlflow_client.set_registered_model_alias(name, "production", evil)
            records = refusals_on_every_worker(svc, evil)
            assert all(r["code"] == "pickle_refused" and "ALLOW_PICKLE_MODELS" in r["reason"] for r in records)
            body = ready_names(svc.url, evil, "pickle_refused")
            assert body["model_version"] == f"{name}-v1"
            assert metric(svc.url, "ride_duration_model_rejections_total", 'code="pickle_refused"') >= 2

            # the same payload in a version whose MLmodel claims skops: not a skops file, never unpickled
            dressed = register_file(name, pickle.dumps(Touch(marker)), "skops")
            mlflow_client.set_registered_model_alias(name, "production", dressed)
            records = refusals_on_every_worker(svc, dressed)
            assert all(r["code"] == "unsafe_types" and "not a skops file" in r["reason"] for r in records)
            ready_names(svc.url, dressed, "unsafe_types")

            polls_pass(svc.url, 6)  # three more polls per worker: nobody tries either version again
            rejected = [r for r in log_events(svc, "model_rejected") if r["version"] in (evil, dressed)]
            per_worker = [(r["pid"], r["version"]) for r in rejected]
            assert len(per_worker) == len(set(per_worker)), f"a worker retried a refused version: {per_worker}"
            loop.wait_for(f"{name}-v1", n=50)
        finally:
            results = loop.stop()
    assert not marker.exists(), "the registry's pickle ran code in the service"
    assert loop.failures() == [], f"{len(loop.failures())} of {len(results)} requests failed: {loop.failures()[:5]}"
    assert {v for _, v in results} == {f"{name}-v1"}
    # refused on MLmodel alone: the pickle is not even fetched (the server logs every artifact GET;
    # it is the run's shared server, so only the lines of this test's two runs count)
    runs = [mlflow_client.get_model_version(name, v).run_id for v in (evil, dressed)]
    served = [line for line in (registry.root / "mlflow-server.log").read_text(errors="replace").splitlines()
              if "GET" in line and any(run in line for run in runs)]
    assert [line for line in served if "/MLmodel" in line], "no artifact access lines to check"
    assert [line for line in served if "model.pkl" in line] == []


def test_signed_versions_swap_in_unsigned_and_mis_signed_ones_are_refused(
        registry: MlflowServer, months: dict[str, Path], mlflow_client: t.Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = "signed"
    trainer, retired = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "trainer.pem").write_bytes(pem_private(trainer))
    (tmp_path / "trusted.pub.pem").write_bytes(pem_public(retired) + pem_public(trainer))  # a rotation's overlap
    dv, lr, _ = fit(months["weak"])
    monkeypatch.setenv("MODEL_SIGNING_PRIVATE_KEY", str(tmp_path / "trainer.pem"))
    v1, _ = register(name, dv, lr, months["valid"], traced=True)  # registration signs: the subject here
    tags = mlflow_client.get_model_version(name, v1).tags
    assert tags[signing.KEY_ID_TAG] == signing.key_id(trainer.public_key())

    env = service_env(registry, name, MODEL_SIGNING_KEY=str(tmp_path / "trusted.pub.pem"))
    with Service(env=env, workers=2, log_path=tmp_path / "service.log") as svc:
        loop = ClientLoop(svc.url).start()
        try:
            loop.wait_for(f"{name}-v1", n=20)
            _, ready = get_json(svc.url + "/ready")
            assert ready["model_version"] == f"{name}-v1" and "refused" not in ready

            monkeypatch.delenv("MODEL_SIGNING_PRIVATE_KEY")
            unsigned, _ = register(name, dv, lr, months["valid"])
            records = refusals_on_every_worker(svc, unsigned)
            assert all(r["code"] == "unsigned" for r in records), records
            ready_names(svc.url, unsigned, "unsigned")

            # another version's valid signature copied onto a new file (with that file's own sha256 tag)
            copied, _ = register(name, dv, lr, months["valid"], alias=False)
            for key in (signing.SIGNATURE_TAG, signing.KEY_ID_TAG):
                mlflow_client.set_model_version_tag(name, copied, key, tags[key])
            mlflow_client.set_registered_model_alias(name, "production", copied)
            records = refusals_on_every_worker(svc, copied)
            assert all(r["code"] == "bad_signature" for r in records), records
            ready_names(svc.url, copied, "bad_signature")
            loop.wait_for(f"{name}-v1", n=50)

            monkeypatch.setenv("MODEL_SIGNING_PRIVATE_KEY", pem_private(trainer).decode())  # PEM text works too
            dv2, lr2, _ = fit(months["v2"])
            good, _ = register(name, dv2, lr2, months["valid"])
            loop.wait_for(f"{name}-v{good}")
            _, card = get_json(svc.url + "/model")
            assert card["registered_version"] == good
        finally:
            results = loop.stop()
    assert loop.failures() == [], f"{len(loop.failures())} of {len(results)} requests failed: {loop.failures()[:5]}"
    assert {v for _, v in results} == {f"{name}-v1", f"{name}-v{good}"}
    # four versions fetched by two workers, and every line of the service's log is still one JSON
    # object (MLflow's download progress bar, unterminated on stderr, used to run into the next one)
    lines = [line for line in svc.log_text().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [line[:120] for line in lines if not line.startswith("{")][:3]


def test_train_register_puts_no_pickle_in_the_registry(
        registry: MlflowServer, months: dict[str, Path], mlflow_client: t.Any, tmp_path: Path) -> None:
    import mlflow.artifacts
    import yaml

    name = "no-pickle"
    code, gate = train_here(registry, name, months["weak"], months["valid"])
    assert code == 0, gate
    uri = mlflow_client.get_model_version_download_uri(name, "1")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    files = [p for p in local.rglob("*") if p.is_file()]
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
    assert flavor["serialization_format"] == "skops" and flavor["pickled_model"] == "model.skops"
    assert sorted(flavor["skops_trusted_types"]) == sorted(safe_format.MODEL_TYPES)
    assert not [p.name for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]
    pickled = [p.name for p in files if p.read_bytes()[:1] == b"\x80"]  # every pickle protocol >= 2 starts so
    assert pickled == [], pickled
    with zipfile.ZipFile(local / "model.skops") as archive:  # skops: a JSON schema and .npy arrays
        assert all(n == "schema.json" or n.endswith(".npy") for n in archive.namelist())
        for n in archive.namelist():
            if n.endswith(".npy"):
                header = archive.read(n)[:128]
                assert b"'O'" not in header and b"|O" not in header, f"{n} is an object array (pickled)"
    assert safe_format.untrusted((local / "model.skops").read_bytes()) == []


# ---- pure parts ---------------------------------------------------------------------------------

def test_the_allow_list_refuses_other_types_before_building_anything(tmp_path: Path) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    marker = tmp_path / "pwned"
    with pytest.raises(safe_format.UnsafeArtifact, match="not a skops file"):
        safe_format.loads(pickle.dumps(Touch(marker)))
    blob = skops.io.dumps(FunctionTransformer(os.system, kw_args={"command": f"touch {marker}"}))
    assert "posix.system" in safe_format.untrusted(blob)
    with pytest.raises(safe_format.UnsafeArtifact, match="posix.system"):
        safe_format.loads(blob)
    assert not marker.exists()
    dv, lr = pickle.loads((BUNDLED / "lin_reg.bin").read_bytes())  # noqa: S301 - our own bundled file
    bundled = load_file(BUNDLED / "lin_reg.bin")
    original = build_pipeline(dv, lr, bundled.step)
    rebuilt = safe_format.loads(skops.io.dumps(original))
    assert type(rebuilt.steps[-1][1]) is type(lr)
    rides = [REFERENCE_RIDE, {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.5},
             {"PULocationID": 1, "DOLocationID": 265, "trip_distance": 0.0}]
    assert rebuilt.predict(rides).tolist() == original.predict(rides).tolist()


def test_signatures_verify_only_with_a_trusted_key_and_only_for_their_digest(tmp_path: Path) -> None:
    old, new, other = (Ed25519PrivateKey.generate() for _ in range(3))
    digest = hashlib.sha256(b"model").hexdigest()
    keys = signing.public_keys((pem_public(old) + pem_public(new)).decode())
    assert set(keys) == {signing.key_id(old.public_key()), signing.key_id(new.public_key())}
    (tmp_path / "pub.pem").write_bytes(pem_public(new))
    (tmp_path / "key.pem").write_bytes(pem_private(new))
    assert list(signing.public_keys(str(tmp_path / "pub.pem"))) == [signing.key_id(new.public_key())]
    tags = signing.sign(signing.private_key(str(tmp_path / "key.pem")), digest)
    assert signing.verify(keys, digest, tags) == signing.key_id(new.public_key())
    assert signing.verify(keys, digest, signing.sign(old, digest)) == signing.key_id(old.public_key())
    with pytest.raises(signing.SignatureError, match="bad signature"):
        signing.verify(keys, hashlib.sha256(b"other model").hexdigest(), tags)
    with pytest.raises(signing.SignatureError, match="bad signature"):
        signing.verify(keys, digest, signing.sign(other, digest))
    with pytest.raises(signing.SignatureError, match="unsigned"):
        signing.verify(keys, digest, {})
    with pytest.raises(signing.SignatureError, match="malformed"):
        signing.verify(keys, digest, {signing.SIGNATURE_TAG: "not base64!"})
    with pytest.raises(signing.SigningKeyError):
        signing.public_keys(str(tmp_path / "missing.pem"))
    with pytest.raises(signing.SigningKeyError, match="Ed25519"):
        signing.public_keys(pem_public_rsa())


def pem_public_rsa() -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_a_bundled_file_without_a_digest_is_refused_unless_named_or_allowed(bundle_copy: Path) -> None:
    (bundle_copy.parent / "metadata.json").unlink()
    with pytest.raises(ModelLoadError, match="no sha256 to check"):
        load_file(bundle_copy, require_digest=True)
    digest = hashlib.sha256(bundle_copy.read_bytes()).hexdigest()
    assert load_file(bundle_copy, expected_sha256=digest, require_digest=True).info["sha256_verified"]
    explicit = ModelHolder()  # MODEL_PATH named by the operator: trusted, with a warning
    assert load_bundled(Settings(model_path=bundle_copy), explicit)
    assert any("integrity not verified" in w for w in explicit.require().info["warnings"])
    assert load_bundled(Settings(), ModelHolder())  # the image's own file: its metadata.json has the sha256
