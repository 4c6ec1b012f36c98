"""Register a trained model in MLflow and promote it through a champion/challenger gate.

Called by ``train.py --register`` (training side: full mlflow and pandas; never
imported by the service). Steps:

1. one run: params, validation RMSE, the data files (as dataset inputs, and as
   artifacts when local), and the model as a pyfunc-servable sklearn pipeline
   (``ride_duration.mlflow_model``) in skops format (no pickle: :mod:`.safe_format`) with
   signature, input example and explicit pins;
2. register it under ``--model-name`` / ``MODEL_NAME``, tag its sha256 and, with
   ``MODEL_SIGNING_PRIVATE_KEY``, its Ed25519 signature (:mod:`.signing`);
3. the gate: candidate and current ``@production`` are both loaded back through
   ``mlflow.pyfunc`` and scored on the same validation rides. The alias (and, with
   ``--legacy-stage``, the deprecated ``Production`` stage) moves only if the candidate's
   RMSE is lower; otherwise the candidate is tagged ``gate=rejected`` with the reason.

The same comparison (:func:`rmse`, :func:`judge`) runs without a registry for the bundled
model: ``train.py --gate-against model/`` (:func:`gate_bundle`) scores the new model and the
bundled champion, each through its own feature step, on the same validation rides.

Exit codes (same as ``train.py``): 0 promoted, 3 kept the champion, 1 error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import typing as t
import warnings
from pathlib import Path

import numpy as np

from ..config import Settings
from ..errors import ExitCode
from ..features import MAX_PLAUSIBLE_MILES, MAX_PLAUSIBLE_MPH, RAW_COLUMNS, FeatureStep, fitted_step, plausible
from ..model.loading import sha256_bytes
from ..model.predictor import LoadedModel, ModelCheckError
from . import signing
from .client import bound_http
from .mlflow_model import (
    FEATURE_STEP_TAG,
    GATE_REASON_TAG,
    GATE_TAG,
    MODEL_ARTIFACT,
    MODEL_FILE,
    SHA256_TAG,
    build_pipeline,
    write_code_package,
)
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


def summary(text: str) -> None:
    """The one line a person or CI job reads."""
    print(f"gate: {text}", flush=True)


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


def champion_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version the alias points at, or None when it is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            return None
        raise


def rmse(predicted: t.Any, valid_rides: pd.DataFrame) -> float:
    """RMSE of ``predicted`` against the rides' ``duration`` (inf if not finite)."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    actual = valid_rides["duration"].to_numpy(dtype=float)
    value = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    return value if math.isfinite(value) else math.inf


PLAUSIBLE_RULE = (f"0 < trip_distance <= {MAX_PLAUSIBLE_MILES:g} miles and average speed under "
                  f"{MAX_PLAUSIBLE_MPH:g} mph")


def plausible_mask(rides: pd.DataFrame) -> np.ndarray:
    """Which rides are plausible (``features.plausible`` on their distance and duration)."""
    return plausible(rides["trip_distance"].to_numpy(dtype=float), rides["duration"].to_numpy(dtype=float))


def metrics(predicted: t.Any, valid_rides: pd.DataFrame) -> dict[str, float]:
    """Both metrics: RMSE on all the 1–60 minute rides (``valid_rmse``, comparable with the course's
    7.48) and on the plausible ones (``valid_rmse_plausible``, what the gate promotes on)."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    keep = plausible_mask(valid_rides)
    return {"valid_rmse": rmse(predicted, valid_rides),
            "valid_rmse_plausible": rmse(predicted[keep], valid_rides.loc[keep])}


def plausibility_counts(train_rides: pd.DataFrame, valid_rides: pd.DataFrame) -> dict[str, t.Any]:
    """What metadata records about the rule: the rule and how many rides of each file it keeps."""
    return {"rule": PLAUSIBLE_RULE, "train_rides": len(train_rides),
            "train_plausible": int(plausible_mask(train_rides).sum()), "valid_rides": len(valid_rides),
            "valid_plausible": int(plausible_mask(valid_rides).sum())}


def score(name: str, version: str, valid_rides: pd.DataFrame) -> dict[str, float]:
    """Both validation RMSEs of a registered version served through ``mlflow.pyfunc`` (inf if not finite)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return metrics(model.predict(valid_rides[list(RAW_COLUMNS)]), valid_rides)


def judge(candidate: t.Mapping[str, float] | float, champion_scores: t.Mapping[str, float] | float,
          champion: str, n: int) -> tuple[bool, str]:
    """The gate's rule: promote only a strictly lower RMSE on the plausible rides of the same
    validation set (both metrics are named in the reason); returns (promote, reason).

    Plain floats (one metric) are compared as they are.
    """
    if not isinstance(candidate, t.Mapping) or not isinstance(champion_scores, t.Mapping):
        cand, champ = float(candidate), float(champion_scores)  # type: ignore[arg-type]
        if not cand < champ:
            return False, (f"candidate RMSE {cand:.4f} is not lower than champion {champion} RMSE "
                           f"{champ:.4f} on the same {n} validation rides")
        return True, (f"candidate RMSE {cand:.4f} < champion {champion} RMSE {champ:.4f} "
                      f"on the same {n} validation rides")
    cand, champ = candidate["valid_rmse_plausible"], champion_scores["valid_rmse_plausible"]
    both = (f" (all 1-60 minute rides: candidate {candidate['valid_rmse']:.4f}, champion "
            f"{champion_scores['valid_rmse']:.4f})")
    if not cand < champ:
        return False, (f"candidate plausible-ride RMSE {cand:.4f} is not lower than champion {champion} "
                       f"{champ:.4f} on the same {n} validation rides{both}")
    return True, (f"candidate plausible-ride RMSE {cand:.4f} < champion {champion} {champ:.4f} "
                  f"on the same {n} validation rides{both}")


def gate_bundle(champion_path: Path, dv: t.Any, lr: t.Any, step: FeatureStep,
                valid_rides: pd.DataFrame) -> tuple[int, dict[str, t.Any]]:
    """The gate against a bundled champion file (no registry): ``(exit code, what metadata records)``.

    Both models are scored as the service serves them (``LoadedModel.predict``, each with its
    own feature step) on the same rides.
    """
    from ..model.loading import load_file

    path = Path(champion_path)
    champion = load_file(path / "lin_reg.bin" if path.is_dir() else path)
    rides = valid_rides[list(RAW_COLUMNS)].to_dict("records")
    n = len(rides)
    try:
        candidate = LoadedModel.build(dv, lr, version="candidate", source="candidate", step=step)
    except ModelCheckError as exc:
        summary(f"kept champion {champion.version}: candidate fails the serving self-test: {exc}")
        return ExitCode.KEPT_CHAMPION, {}
    candidate_scores = metrics(candidate.predict(rides), valid_rides)
    champion_scores = metrics(champion.predict(rides), valid_rides)
    ok, reason = judge(candidate_scores, champion_scores, champion.version, n)
    record = {"decision": "promoted" if ok else "rejected", "reason": reason, "rides": n,
              "plausible_rides": int(plausible_mask(valid_rides).sum()),
              "candidate_rmse": candidate_scores["valid_rmse"],
              "candidate_rmse_plausible": candidate_scores["valid_rmse_plausible"],
              "champion": champion.version, "champion_rmse": champion_scores["valid_rmse"],
              "champion_rmse_plausible": champion_scores["valid_rmse_plausible"],
              "champion_feature_step": champion.step.to_dict(), "champion_sha256": champion.info["sha256"]}
    summary(f"{'promoted candidate over' if ok else 'kept champion'} {champion.version}: {reason}")
    return (ExitCode.OK if ok else ExitCode.KEPT_CHAMPION), record


def promote(client: MlflowClient, name: str, version: str, alias: str, legacy_stage: bool) -> None:
    """Move the alias (and optionally the deprecated stage) to ``version``."""
    client.set_registered_model_alias(name, alias, version)
    if legacy_stage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated since MLflow 2.9
            client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)


def gate(client: MlflowClient, name: str, version: str, valid_rides: pd.DataFrame, alias: str,
         legacy_stage: bool, dv: t.Any, lr: t.Any, step: t.Mapping[str, t.Any] | None = None) -> int:
    """Champion/challenger: promote ``version`` only if it beats the alias's version."""
    n = len(valid_rides)
    try:
        LoadedModel.build(dv, lr, version=version, source="candidate", step=FeatureStep.from_dict(step))
    except ModelCheckError as exc:
        return reject(client, name, version, f"candidate fails the serving self-test: {exc}")
    candidate_scores = score(name, version, valid_rides)
    if not all(math.isfinite(v) for v in candidate_scores.values()):
        return reject(client, name, version, "candidate RMSE is not finite")
    champion = champion_version(client, name, alias)
    if champion is None:
        reason = (f"no @{alias} version yet; candidate plausible-ride RMSE "
                  f"{candidate_scores['valid_rmse_plausible']:.4f} (all 1-60 minute rides "
                  f"{candidate_scores['valid_rmse']:.4f}) on {n} validation rides")
    else:
        champion_scores = score(name, champion, valid_rides)
        ok, reason = judge(candidate_scores, champion_scores, f"v{champion}", n)
        if not ok:
            return reject(client, name, version, reason)
        client.set_model_version_tag(name, version, "previous_" + alias, champion)
    promote(client, name, version, alias, legacy_stage)
    client.set_model_version_tag(name, version, GATE_TAG, "promoted")
    client.set_model_version_tag(name, version, GATE_REASON_TAG, reason)
    stage = " and stage Production" if legacy_stage else ""
    summary(f"promoted {name} v{version} to @{alias}{stage}: {reason}")
    return ExitCode.OK


def reject(client: MlflowClient, name: str, version: str, reason: str) -> int:
    client.set_model_version_tag(name, version, GATE_TAG, "rejected")
    client.set_model_version_tag(name, version, GATE_REASON_TAG, reason[:5000])
    summary(f"kept champion; {name} v{version} rejected: {reason}")
    return ExitCode.KEPT_CHAMPION


def register_and_gate(args: argparse.Namespace, dv: t.Any, lr: t.Any, info: dict[str, t.Any],
                      valid_rides: pd.DataFrame) -> int:
    """Log, register and gate a trained model; returns the process exit code."""
    settings = Settings()
    name = args.model_name or settings.model_name
    if not settings.mlflow_tracking_uri:
        summary("error: --register needs MLFLOW_TRACKING_URI (the tracking server's URL)")
        return ExitCode.ERROR
    bound_http(timeout=60, max_retries=3)
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        version, _ = log_and_register(args, name, dv, lr, info, valid_rides)
        return gate(mlflow.MlflowClient(), name, version, valid_rides, args.alias, args.legacy_stage, dv, lr,
                    fitted_step(dv, info.get("feature_step")).to_dict())
    except Exception as exc:  # noqa: BLE001 - a CLI: report any failure as one line and exit 1
        log.exception("registration failed")
        summary(f"error: {type(exc).__name__}: {str(exc)[:500]}")
        return ExitCode.ERROR
