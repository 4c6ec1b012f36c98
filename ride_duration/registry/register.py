"""Log a trained model to MLflow and register it: the run, the model file, its tags and signature.

Called through :func:`.promote.register_and_gate` (``train.py --register``, ``retrain``; training
side: full mlflow and pandas, never imported by the service). One run records the params, both
validation RMSEs, the data files (as dataset inputs, and as artifacts when local) and the model as
a pyfunc-servable sklearn pipeline (:mod:`.mlflow_model`) in skops format (no pickle:
:mod:`.safe_format`) with signature, input example and explicit pins. The version is registered
under ``--model-name`` / ``MODEL_NAME`` and tagged with its sha256, feature step, RMSEs and, with
``MODEL_SIGNING_PRIVATE_KEY``, its Ed25519 signature (:mod:`.signing`).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import typing as t
import warnings
from pathlib import Path

import numpy as np

from ..config import Settings
from ..features import RAW_COLUMNS, fitted_step
from ..model.loading import sha256_bytes
from . import signing
from .mlflow_model import FEATURE_STEP_TAG, MODEL_ARTIFACT, MODEL_FILE, SHA256_TAG, build_pipeline, write_code_package
from .safe_format import MODEL_TYPES

if t.TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MAX_DATA_ARTIFACT_BYTES = 200 * 1024 * 1024
"""Local data files up to this size are copied into the run's artifacts."""


def requirements() -> list[str]:
    """Exact pins for the logged model (skips MLflow's slow requirement inference)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "numpy", "skops", "pandas")]


def log_data(info: dict[str, t.Any], valid_rides: pd.DataFrame) -> None:
    """Record the training and validation data as dataset inputs, and copy local files."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for context in ("train", "valid"):
        source = str(info[f"{context}_data"]["source"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "source can be interpreted in multiple ways", schema hints
                if context == "valid":
                    dataset = mlflow.data.from_pandas(valid_rides[list(RAW_COLUMNS) + ["duration"]],
                                                      source=source, targets="duration", name=Path(source).name)
                else:
                    dataset = MetaDataset(resolve_dataset_source(source), name=Path(source).name)
                mlflow.log_input(dataset, context="training" if context == "train" else "validation")
        except Exception as exc:  # noqa: BLE001 - lineage is recorded as a param anyway
            log.warning("could not record %s data %s as a dataset input: %s", context, source, exc)
        path = Path(source)
        if path.is_file() and path.stat().st_size <= MAX_DATA_ARTIFACT_BYTES:
            mlflow.log_artifact(str(path), artifact_path=f"data/{context}")


def log_and_register(args: argparse.Namespace, name: str, dv: t.Any, lr: t.Any, info: dict[str, t.Any],
                     valid_rides: pd.DataFrame) -> tuple[str, str]:
    """Log the run and the model, register it; returns ``(version, run_id)``."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run() as run:
        mlflow.log_params({
            **{k: v for k, v in info.get("params", {}).items()},
            "train_data": info["train_data"]["source"], "train_rows": info["train_data"]["rows"],
            "valid_data": info["valid_data"]["source"], "valid_rows": info["valid_data"]["rows"],
            "n_features": len(getattr(dv, "feature_names_", [])),
        })
        mlflow.log_metrics({k: float(v) for k, v in info["metrics"].items()})
        log_data(info, valid_rides)
        step = fitted_step(dv, info.get("feature_step"))
        pipeline = build_pipeline(dv, lr, step)
        example = valid_rides[list(RAW_COLUMNS)].head(5).reset_index(drop=True)
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            # MLflow's own noise: "integer columns can't hold NaN" (rides are cleaned), a pandas deprecation
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            warnings.filterwarnings("ignore", message="Operation with range is deprecated")
            signature = infer_signature(example, np.asarray(pipeline.predict(example), dtype=float))
            model_info = mlflow.sklearn.log_model(
                pipeline, name=MODEL_ARTIFACT, serialization_format="skops", skops_trusted_types=list(MODEL_TYPES),
                signature=signature, input_example=example, code_paths=[str(write_code_package(Path(tmp)))],
                pip_requirements=requirements(), metadata=info, registered_model_name=name)
    version = str(model_info.registered_model_version)
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        uri = client.get_model_version_download_uri(name, version)
        stored = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{MODEL_FILE}", dst_path=tmp)
        digest = sha256_bytes(Path(stored).read_bytes())
    client.set_model_version_tag(name, version, SHA256_TAG, digest)
    sign_version(client, name, version, run.info.run_id, digest)
    client.set_model_version_tag(name, version, FEATURE_STEP_TAG, json.dumps(step.to_dict(), sort_keys=True))
    client.set_model_version_tag(name, version, "valid_rmse", f"{info['metrics']['valid_rmse']:.6f}")
    if "valid_rmse_plausible" in info["metrics"]:
        client.set_model_version_tag(name, version, "valid_rmse_plausible",
                                     f"{info['metrics']['valid_rmse_plausible']:.6f}")
    log.info("registered %s version %s (run %s, sha256 %s)", name, version, run.info.run_id, digest[:12])
    return version, run.info.run_id


def sign_version(client: MlflowClient, name: str, version: str, run_id: str, digest: str) -> None:
    """Tag the version (and its run, for ``runs:/`` URIs) with the signature of ``digest``.

    Uses ``MODEL_SIGNING_PRIVATE_KEY``; without it the version is registered unsigned (a warning:
    a service with ``MODEL_SIGNING_KEY`` set will refuse it).

    :raises signing.SigningKeyError: the key is set but unusable (registration then fails: better
        than a version every service refuses).
    """
    value = Settings().model_signing_private_key
    if not value:
        log.warning("MODEL_SIGNING_PRIVATE_KEY is not set: %s v%s is unsigned", name, version)
        return
    tags = signing.sign(signing.private_key(value), digest)
    for key, tag in tags.items():
        client.set_model_version_tag(name, version, key, tag)
        client.set_tag(run_id, key, tag)
    log.info("signed %s v%s with key %s", name, version, tags[signing.KEY_ID_TAG])


def resign(client: MlflowClient, name: str, version: str) -> str:
    """Sign an already registered version again (a key rotation); returns the digest signed.

    The digest is recomputed from the model file in the registry, not taken from its tag, and
    must equal the tag: re-signing never blesses a file that changed since it was registered.

    :raises ValueError: the file's digest differs from the version's ``model_sha256`` tag.
    """
    import mlflow.artifacts

    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        uri = client.get_model_version_download_uri(name, version)
        stored = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{MODEL_FILE}", dst_path=tmp)
        digest = sha256_bytes(Path(stored).read_bytes())
    if digest != (mv.tags or {}).get(SHA256_TAG, "").lower():
        raise ValueError(f"{name} v{version}: {MODEL_FILE} has sha256 {digest[:12]}…, its {SHA256_TAG} tag says "
                         f"{(mv.tags or {}).get(SHA256_TAG, 'nothing')[:12]}; not signing")
    sign_version(client, name, version, mv.run_id, digest)
    return digest
