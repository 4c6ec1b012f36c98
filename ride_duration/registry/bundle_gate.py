"""The gate against a bundled champion file, without a registry: ``train.py --gate-against model/``.

The new model and the bundled champion are scored as the service serves them
(``LoadedModel.predict``, each through its own feature step) on the same validation rides, and
judged by the registry gate's rule (:func:`.gate.judge`).
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from ..errors import ExitCode
from ..features import RAW_COLUMNS, FeatureStep
from ..model.predictor import LoadedModel, ModelCheckError
from .gate import judge, metrics, plausible_mask
from .summary import summary

if t.TYPE_CHECKING:
    import pandas as pd


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
