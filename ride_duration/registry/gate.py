"""The gate's comparison, without a registry or printing: both validation RMSEs and the rule.

The candidate is promoted only when its RMSE on the plausible rides (``features.plausible``) of
the validation set is strictly lower than the champion's on the same rides; the RMSE on all the
1–60 minute rides (comparable with the course's 7.48) is reported beside it. Used by the registry
gate (:mod:`.promote`), the bundle gate (:mod:`.bundle_gate`) and the training jobs' metadata.
"""

from __future__ import annotations

import math
import typing as t

import numpy as np

from ..features import MAX_PLAUSIBLE_MILES, MAX_PLAUSIBLE_MPH, plausible

if t.TYPE_CHECKING:
    import pandas as pd

PLAUSIBLE_RULE = (f"0 < trip_distance <= {MAX_PLAUSIBLE_MILES:g} miles and average speed under "
                  f"{MAX_PLAUSIBLE_MPH:g} mph")


def rmse(predicted: t.Any, valid_rides: pd.DataFrame) -> float:
    """RMSE of ``predicted`` against the rides' ``duration`` (inf if not finite)."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    actual = valid_rides["duration"].to_numpy(dtype=float)
    value = float(np.sqrt(np.mean((actual - predicted) ** 2)))
    return value if math.isfinite(value) else math.inf


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
