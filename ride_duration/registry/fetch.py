"""Resolving a model URI in the MLflow registry and fetching it as a checked ``LoadedModel``.

mlflow-skinny only: registry calls and artifact downloads (``MLmodel``, the model file, the
input example); no pyfunc, no pandas. Nothing from the registry runs code here: the model
file must be skops (read against :data:`.safe_format.MODEL_TYPES`; a pickle is refused
unless ``ALLOW_PICKLE_MODELS=true``), and its sha256 is checked against the version's
``model_sha256`` tag and, with ``MODEL_SIGNING_KEY``, its Ed25519 signature (:mod:`.signing`)
before it is deserialized. Two kinds of failure: the registry could not be asked
(:class:`RegistryUnavailable`, try again later) or the model is not fit or not trusted to
serve (:class:`CandidateRejected`, don't try this version again).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import pickle
import re
import tempfile
import typing as t
import warnings
from pathlib import Path

import sklearn

from ..model.loading import sha256_bytes
from ..model.predictor import LoadedModel, ModelCheckError
from . import safe_format, signing
from .mlflow_model import FEATURE_STEP_TAG, SHA256_TAG, example_rides, pipeline_step, split_pipeline

if t.TYPE_CHECKING:
    from mlflow import MlflowClient

    from ..config import Settings

log = logging.getLogger(__name__)

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))?/?$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+?)/?$")




class RegistryUnavailable(Exception):
    """The registry could not be asked, or the URI points at nothing yet; try again later."""


class CandidateRejected(Exception):
    """The model the URI points at is not fit to serve, or not trusted; don't try this one again.

    ``code`` is a stable, bounded word for metrics: ``pickle_refused``, ``unsigned``,
    ``bad_signature``, ``digest_mismatch``, ``unsafe_types``, or ``invalid`` (fails the checks).
    """

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Target:
    """What a model URI points at right now."""

    uri: str
    artifact_uri: str
    """Where its files are; "" for a registered version until :func:`located` asks (loading only)."""
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    stage: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identity of the artifact: a registered version, else its location."""
        return f"{self.name}/{self.version}" if self.version else self.artifact_uri

    @property
    def label(self) -> str:
        """The ``model_version`` responses carry."""
        if self.version:
            return f"{self.name}-v{self.version}"
        return f"run-{(self.run_id or 'unknown')[:12]}"


def short(exc: BaseException, limit: int = 300) -> str:
    """One line of an exception, for ``/ready`` and logs (MLflow's messages run long)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def resolve(client: MlflowClient, uri: str) -> Target:
    """Ask the registry what ``uri`` points at. :raises RegistryUnavailable: cannot tell (now)."""
    from mlflow.exceptions import MlflowException

    runs = RUNS_URI.match(uri)
    if runs:
        return Target(uri, uri, run_id=runs["run_id"])
    match = MODELS_URI.match(uri)
    if not match:
        raise RegistryUnavailable(f"unsupported MODEL_URI {uri!r}")
    name, alias, ref = match["name"], match["alias"], match["ref"]
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif ref is None and name.startswith("m-"):
            return Target(uri, uri)  # a logged model id: fixed artifacts, no registry entry
        elif ref is not None and ref.isdigit():
            mv = client.get_model_version(name, ref)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated since MLflow 2.9
                stages = None if ref in (None, "latest") else [ref]
                found = client.get_latest_versions(name, stages)
            if not found:
                raise RegistryUnavailable(f"model {name!r} has no version in stage {ref or 'latest'}")
            mv = max(found, key=lambda v: int(v.version))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            what = f"alias @{alias}" if alias else f"version {ref}"
            raise RegistryUnavailable(f"{what} of model {name!r} not found in the registry") from exc
        raise RegistryUnavailable(f"registry request failed: {short(exc)}") from exc
    # the artifacts' location is asked for only when the version is loaded (:func:`located`): a poll
    # that finds the version it serves is one registry request, from every worker of every replica
    return Target(uri, "", name=mv.name, version=str(mv.version), alias=alias,
                  stage=None if alias or (ref or "").isdigit() else (ref or "latest"),
                  run_id=mv.run_id or None, tags=dict(mv.tags or {}))


def located(client: MlflowClient, target: Target) -> Target:
    """``target`` with its artifacts' location (a registered version's is asked of the registry here).

    :raises RegistryUnavailable: the registry could not tell."""
    if target.artifact_uri or not target.version:
        return target
    from mlflow.exceptions import MlflowException

    try:
        artifact_uri = client.get_model_version_download_uri(target.name, target.version)
    except MlflowException as exc:
        raise RegistryUnavailable(f"registry request failed: {short(exc)}") from exc
    return dataclasses.replace(target, artifact_uri=artifact_uri)


def download(artifact_uri: str, dst: str) -> Path:
    """One artifact file. :raises RegistryUnavailable: on any transport or lookup error."""
    import mlflow.artifacts

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))
    except ImportError as exc:  # e.g. s3:// without boto3: the service image carries no cloud SDK
        raise RegistryUnavailable(missing_sdk(artifact_uri, exc)) from exc
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types for "could not fetch"
        raise RegistryUnavailable(f"cannot download {artifact_uri.rsplit('/', 1)[-1]}: {short(exc)}") from exc


SDK_PACKAGES = {"boto3": "boto3", "botocore": "boto3", "s3transfer": "boto3", "google": "google-cloud-storage",
                "azure": "azure-storage-blob"}
"""The distribution to install when an artifact repository's import fails (top-level module -> package)."""


def missing_sdk(artifact_uri: str, exc: ImportError) -> str:
    """Why an object-store artifact cannot be read here, and the two ways out."""
    scheme = artifact_uri.split(":", 1)[0]
    top = (exc.name or "").split(".")[0]
    package = SDK_PACKAGES.get(top, top or "the store's client library")
    return (f"artifacts at {scheme}:// need the {package} package, which this service does not carry; "
            f"run the tracking server with --serve-artifacts --artifacts-destination {scheme}://... (the "
            f"default) so artifacts are proxied as mlflow-artifacts:/, or install {package}")


def run_metrics(client: MlflowClient, run_id: str | None, warnings_out: list[str]) -> dict[str, float] | None:
    if not run_id:
        return None
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception as exc:  # noqa: BLE001 - metrics are informative; the model still serves
        warnings_out.append(f"run metrics unavailable: {short(exc, 120)}")
        return None


PICKLE_FORMATS = ("pickle", "cloudpickle")


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """What the service accepts from the registry (from ``ALLOW_PICKLE_MODELS`` and ``MODEL_SIGNING_KEY``)."""

    allow_pickle: bool = False
    keys: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict)
    """Trusted Ed25519 public keys by key id; empty: signatures are not required."""
    key_error: str | None = None
    """Why ``MODEL_SIGNING_KEY`` could not be read: then every version is refused (fail closed)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LoadPolicy:
        keys: dict[str, t.Any] = {}
        error = None
        if settings.model_signing_key:
            try:
                keys = signing.public_keys(settings.model_signing_key)
            except signing.SigningKeyError as exc:
                error = str(exc)
                log.error("MODEL_SIGNING_KEY is unusable, every registry version will be refused: %s", exc)
        return cls(allow_pickle=settings.allow_pickle_models, keys=keys, key_error=error)


@dataclasses.dataclass
class Fetched:
    """A version's files, downloaded and verified (format, digest, signature), not yet deserialized."""

    target: Target
    mlmodel: dict[str, t.Any]
    fmt: str
    blob: bytes
    digest: str
    verified: bool
    signed_by: str | None
    example: t.Any
    metrics: dict[str, float] | None
    notes: list[str]


def load(client: MlflowClient, target: Target, policy: LoadPolicy | None = None) -> LoadedModel:
    """Download, verify, deserialize and check the model at ``target`` (:func:`fetch` then :func:`build`).

    :raises RegistryUnavailable: the artifacts could not be fetched (transient).
    :raises CandidateRejected: the artifacts are not a servable model, or not a trusted one (permanent).
    """
    return build(fetch(client, target, policy))


def fetch(client: MlflowClient, target: Target, policy: LoadPolicy | None = None) -> Fetched:
    """Every registry call of a load: download and verify, deserialize nothing.

    Order matters: the format is judged from ``MLmodel`` before the model file is fetched (a
    pickle is refused unless ``policy.allow_pickle``), and the file's sha256 and signature are
    checked here, before :func:`build` deserializes a byte of it.

    :raises RegistryUnavailable: the artifacts could not be fetched (transient).
    :raises CandidateRejected: the version is not a trusted model (permanent).
    """
    import yaml

    if policy is None:
        from ..config import Settings

        policy = LoadPolicy.from_settings(Settings())
    if policy.key_error:
        raise CandidateRejected(f"MODEL_SIGNING_KEY is unusable ({policy.key_error}): refusing every version",
                                code="bad_signature")
    notes: list[str] = []
    target = located(client, target)
    base = target.artifact_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="ride-duration-model-") as tmp:
        mlmodel = yaml.safe_load(download(f"{base}/MLmodel", tmp).read_text()) or {}
        flavor = (mlmodel.get("flavors") or {}).get("sklearn")
        if not flavor:
            raise CandidateRejected("not an sklearn-flavour MLflow model")
        fmt = str(flavor.get("serialization_format", "pickle"))
        if fmt in PICKLE_FORMATS and not policy.allow_pickle:
            raise CandidateRejected(
                f"refused: a {fmt} model runs code when loaded; register it with serialization_format='skops' "
                "(train.py --register does), or set ALLOW_PICKLE_MODELS=true (unsafe)", code="pickle_refused")
        if fmt not in PICKLE_FORMATS + ("skops",):
            raise CandidateRejected(f"serialization format {fmt!r} is not supported by the service; "
                                    "log with serialization_format='skops'")
        default_file = "model.skops" if fmt == "skops" else "model.pkl"
        filename = str(flavor.get("pickled_model", default_file))
        if "/" in filename or filename.startswith("."):
            raise CandidateRejected(f"model file name {filename!r} is not a plain file name")
        blob = download(f"{base}/{filename}", tmp).read_bytes()
        example_info = mlmodel.get("saved_input_example_info") or {}
        example = None
        if example_info.get("artifact_path"):
            example = json.loads(download(f"{base}/{example_info['artifact_path']}", tmp).read_text())
    digest = sha256_bytes(blob)
    tags = target.tags if target.version or not policy.keys else run_tags(client, target.run_id)
    expected = tags.get(SHA256_TAG)
    if expected and expected.lower() != digest:
        raise CandidateRejected(f"sha256 mismatch: tag {SHA256_TAG} says {expected[:12]}…, artifact has "
                                f"{digest[:12]}…; refusing to load", code="digest_mismatch")
    signed_by = None
    if policy.keys:
        try:
            signed_by = signing.verify(policy.keys, digest, tags)
        except signing.SignatureError as exc:
            code = "unsigned" if signing.SIGNATURE_TAG not in tags else "bad_signature"
            raise CandidateRejected(f"{exc}; refusing to load", code=code) from exc
    elif not expected:
        notes.append(f"no {SHA256_TAG} tag on the model version: integrity not verified")
    metrics = run_metrics(client, target.run_id or mlmodel.get("run_id"), notes)
    return Fetched(target, mlmodel, fmt, blob, digest, bool(expected or signed_by), signed_by, example, metrics,
                   notes)


def build(fetched: Fetched) -> LoadedModel:
    """Deserialize a verified version (skops against :data:`.safe_format.MODEL_TYPES`) and check it.

    No registry call: CPU only, so a start-up deadline need not cover it.

    :raises CandidateRejected: the file is not a servable model, or names an untrusted type.
    """
    target, mlmodel, fmt, blob, notes = fetched.target, fetched.mlmodel, fetched.fmt, fetched.blob, fetched.notes
    flavor = mlmodel["flavors"]["sklearn"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if fmt == "skops":
                pipeline = safe_format.loads(blob)
            else:
                pipeline = pickle.loads(blob)  # noqa: S301 - only with ALLOW_PICKLE_MODELS=true (documented unsafe)
            dv, regressor = split_pipeline(pipeline)
            step = pipeline_step(pipeline)
        except safe_format.UnsafeArtifact as exc:
            raise CandidateRejected(f"refused: {exc}", code="unsafe_types") from exc
        except ModelCheckError as exc:
            raise CandidateRejected(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any deserialization failure disqualifies the model
            raise CandidateRejected(f"cannot load model file: {short(exc)}") from exc
    notes += sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    if fmt in PICKLE_FORMATS:
        notes.append(f"loaded a {fmt} model because ALLOW_PICKLE_MODELS=true (unsafe)")
    tagged = target.tags.get(FEATURE_STEP_TAG)
    if tagged is not None and tagged != json.dumps(step.to_dict(), sort_keys=True):
        raise CandidateRejected(f"model version tag {FEATURE_STEP_TAG}={tagged} disagrees with the pipeline's "
                                f"feature step {step.to_dict()}")
    run_id = target.run_id or mlmodel.get("run_id")
    metadata = dict(mlmodel.get("metadata") or {})
    if fetched.metrics is not None:
        metadata["metrics"] = fetched.metrics
    info = {
        "name": target.name or mlmodel.get("model_id"), "uri": target.uri, "alias": target.alias,
        "stage": target.stage, "registered_version": target.version, "run_id": run_id,
        "artifact_uri": target.artifact_uri, "sha256": fetched.digest, "sha256_verified": fetched.verified,
        "format": fmt, "signed_by": fetched.signed_by,
        "metrics": metadata.get("metrics"), "metadata": metadata,
        "sklearn_version": sklearn.__version__, "trained_sklearn_version": flavor.get("sklearn_version"),
        "loaded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "warnings": notes,
    }
    try:
        model = LoadedModel.build(dv, regressor, version=target.label, source="registry", info=info, step=step)
        if fetched.example is not None:
            check_example(model, example_rides(fetched.example))
    except ModelCheckError as exc:
        raise CandidateRejected(str(exc)) from exc
    return model


def run_tags(client: MlflowClient, run_id: str | None) -> dict[str, str]:
    """A run's tags (a ``runs:/`` URI has no model version to carry the signature).

    :raises RegistryUnavailable: the run could not be read.
    """
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.tags)
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types for "could not fetch"
        raise RegistryUnavailable(f"cannot read run {run_id[:12]} tags: {short(exc)}") from exc


def check_example(model: LoadedModel, rides: list[dict[str, t.Any]]) -> None:
    """The logged input example must give one finite prediction per ride (both paths).

    :raises ModelCheckError: otherwise.
    """
    for out in (model.predict(rides), model.predict_general(rides).ravel().tolist()):
        if len(out) != len(rides) or not all(math.isfinite(v) for v in out):
            raise ModelCheckError("input example gave NaN, infinite or missing predictions")
