"""The MLflow client the service and the jobs share, with bounded HTTP retries."""

from __future__ import annotations

import os
import typing as t

if t.TYPE_CHECKING:
    from mlflow import MlflowClient


def bound_http(timeout: float, max_retries: int) -> None:
    """Cap MLflow's HTTP retries and timeout unless the operator set them.

    MLflow's defaults (7 retries, exponential backoff, 120 s timeout) take ~246 s to
    give up on a registry that is down. MLflow reads these variables on every request.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(round(timeout)))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    # MLflow 3's usage telemetry fetches its config from the internet in a thread; when that fails it
    # removes an environment variable from that thread while a registry request reads os.environ
    # (retrain's log-batch failed with "exception '_MLFLOW_TELEMETRY_SESSION_ID'"). Nothing here
    # should phone home anyway; MLFLOW_DISABLE_TELEMETRY=false turns it back on. Read when mlflow is
    # first imported: call this before that.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's artifact download progress bar (tqdm, on stderr, no newline) ran into the next JSON log
    # line of a worker that had just fetched a version, so that line was no longer JSON for a log
    # pipeline. MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true turns it back on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client_for(tracking_uri: str) -> MlflowClient:
    """An MLflow client on ``tracking_uri`` (imports mlflow; ``mlflow-artifacts:/`` downloads resolve
    against the global tracking URI, so that is set too)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
