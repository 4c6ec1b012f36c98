"""The champion/challenger gate in the registry: promote a registered version only if it is better.

Called by ``train.py --register`` and ``retrain`` (:func:`register_and_gate`: log and register
through :mod:`.register`, then gate) and by ``promote`` (:func:`gate`). The candidate and the
current ``@production`` (the alias given) are both loaded back through ``mlflow.pyfunc`` and scored
on the same validation rides (:mod:`.gate`: the rule). The alias (and, with ``--legacy-stage``, the
deprecated ``Production`` stage) moves only if the candidate's RMSE is lower; otherwise the
candidate is tagged ``gate=rejected`` with the reason. One ``gate:`` line says the decision
(:mod:`.summary`).

Exit codes (same as ``train.py``): 0 promoted, 3 kept the champion, 1 error.
"""

from __future__ import annotations

import argparse
import logging
import math
import typing as t

from ..config import Settings
from ..errors import ExitCode
from ..features import RAW_COLUMNS, FeatureStep, fitted_step
from ..model.predictor import LoadedModel, ModelCheckError
from .aliases import champion_version, move
from .client import bound_http
from .gate import judge, metrics
from .mlflow_model import GATE_REASON_TAG, GATE_TAG
from .register import log_and_register
from .summary import summary

if t.TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def score(name: str, version: str, valid_rides: pd.DataFrame) -> dict[str, float]:
    """Both validation RMSEs of a registered version served through ``mlflow.pyfunc`` (inf if not finite)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return metrics(model.predict(valid_rides[list(RAW_COLUMNS)]), valid_rides)


def gate(client: MlflowClient, name: str, version: str, valid_rides: pd.DataFrame, alias: str,
         legacy_stage: bool, dv: t.Any, lr: t.Any, step: t.Mapping[str, t.Any] | None = None,
         against: str | None = None) -> int:
    """Champion/challenger: move ``alias`` to ``version`` only if it beats the version of ``against``
    (default: of ``alias`` itself; ``retrain --require-shadow-evidence`` moves ``@challenger`` only
    if the candidate beats ``@production``)."""
    n = len(valid_rides)
    try:
        LoadedModel.build(dv, lr, version=version, source="candidate", step=FeatureStep.from_dict(step))
    except ModelCheckError as exc:
        return reject(client, name, version, f"candidate fails the serving self-test: {exc}")
    candidate_scores = score(name, version, valid_rides)
    if not all(math.isfinite(v) for v in candidate_scores.values()):
        return reject(client, name, version, "candidate RMSE is not finite")
    champion = champion_version(client, name, against or alias)
    if champion is None:
        reason = (f"no @{against or alias} version yet; candidate plausible-ride RMSE "
                  f"{candidate_scores['valid_rmse_plausible']:.4f} (all 1-60 minute rides "
                  f"{candidate_scores['valid_rmse']:.4f}) on {n} validation rides")
    else:
        champion_scores = score(name, champion, valid_rides)
        ok, reason = judge(candidate_scores, champion_scores, f"v{champion}", n)
        if not ok:
            return reject(client, name, version, reason)
        previous = champion if against is None else champion_version(client, name, alias)
        if previous is not None:
            client.set_model_version_tag(name, version, "previous_" + alias, previous)
    move(client, name, version, alias, legacy_stage)
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
                    fitted_step(dv, info.get("feature_step")).to_dict(), getattr(args, "against", None))
    except Exception as exc:  # noqa: BLE001 - a CLI: report any failure as one line and exit 1
        log.exception("registration failed")
        summary(f"error: {type(exc).__name__}: {str(exc)[:500]}")
        return ExitCode.ERROR
