"""Both metrics of the bundled model, recomputed from the score CLI's output with plain pandas/numpy.

Nothing from the training code is used here: the rides are the real TLC months, the predictions
come from ``python -m ride_duration score`` (a subprocess for the validation month; the later months
call the same command's ``main`` in-process, without another interpreter and its imports), and the
1–60 minute filter and the plausibility rule (0 < distance <= 60 miles, under 80 mph) are written out
again below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import BUNDLED, require_real
from tests.synthetic import ROOT

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

METADATA = json.loads((BUNDLED / "metadata.json").read_text())
PLAUSIBLE_GOAL, ALL_RIDES_BOUND = 6.0, 6.60
"""Issue 19: 2021-02 scored by the model trained on 2021-01."""


def both_rmses(month: str, tmp_path, in_process: bool = False) -> dict[str, float]:
    source = require_real(month)
    output = tmp_path / f"{month}.parquet"
    argv = ["score", "--input", str(source), "--output", str(output)]
    if in_process:
        from ride_duration.__main__ import main

        assert main(argv) == 0
    else:
        result = subprocess.run([sys.executable, "-m", "ride_duration", *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    scored = pd.read_parquet(output)
    raw = pd.read_parquet(source, columns=["lpep_pickup_datetime", "lpep_dropoff_datetime", "trip_distance"])
    minutes = (raw["lpep_dropoff_datetime"] - raw["lpep_pickup_datetime"]).dt.total_seconds().to_numpy() / 60
    miles = raw["trip_distance"].to_numpy()
    predicted = scored["predicted_duration"].to_numpy(dtype=float)
    assert len(scored) == len(raw)  # one output row per input row, in order
    one_to_sixty = (minutes >= 1) & (minutes <= 60) & ~np.isnan(predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        plausible = one_to_sixty & (miles > 0) & (miles <= 60) & (miles / (minutes / 60) < 80)
    error = predicted - minutes
    return {"all": float(np.sqrt(np.mean(error[one_to_sixty] ** 2))),
            "plausible": float(np.sqrt(np.mean(error[plausible] ** 2))),
            "n_all": int(one_to_sixty.sum()), "n_plausible": int(plausible.sum())}


def test_validation_month_meets_the_goals_and_matches_the_metadata(tmp_path):
    scores = both_rmses("2021-02", tmp_path)
    assert scores["plausible"] <= PLAUSIBLE_GOAL
    assert scores["all"] <= ALL_RIDES_BOUND
    assert scores["plausible"] == pytest.approx(METADATA["metrics"]["valid_rmse_plausible"], abs=1e-6)
    assert scores["all"] == pytest.approx(METADATA["metrics"]["valid_rmse"], abs=1e-6)
    assert scores["n_plausible"] == METADATA["plausibility"]["valid_plausible"]
    assert scores["n_all"] == METADATA["valid_data"]["rows"]
    assert scores["plausible"] < METADATA["metrics"]["champion_valid_rmse_plausible"]  # beat flagged-v2


@pytest.mark.slow
@pytest.mark.parametrize("month", ["2022-07", "2023-03"])
def test_later_months_are_scored_and_the_plausible_rmse_leaves_out_only_bad_rides(month, tmp_path):
    scores = both_rmses(month, tmp_path, in_process=True)
    assert 0.95 * scores["n_all"] < scores["n_plausible"] < scores["n_all"]  # the rule drops 2-5 %, not more
    assert scores["plausible"] < scores["all"] < 8.0  # garbage distances cost RMSE; the course's model: 7.48
