"""Read and move a registered model's aliases (and the deprecated ``Production`` stage)."""

from __future__ import annotations

import typing as t
import warnings

if t.TYPE_CHECKING:
    from mlflow import MlflowClient


def champion_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version the alias points at, or None when it is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            return None
        raise


def move(client: MlflowClient, name: str, version: str, alias: str, legacy_stage: bool) -> None:
    """Move the alias (and optionally the deprecated stage) to ``version``."""
    client.set_registered_model_alias(name, alias, version)
    if legacy_stage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated since MLflow 2.9
            client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
