"""The bundled model behaves (issue 19), seen through real gunicorn and HTTP only.

* every zone pair's minutes are non-decreasing in ``trip_distance`` over 0.1–60 miles, with no
  step over 3 minutes between distances 0.5 mile apart (300 pairs, one batch request each);
* an implausible distance is still answered, with a ``warnings`` entry naming ``trip_distance``
  (``/predict``, ``/invocations``, V2), counted in ``/metrics``; a plausible one has none.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ride_duration.model.loading import load_file
from tests.conftest import BUNDLED
from tests.support import http, post_json, running

GRID = np.round(np.arange(0.1, 60.0 + 1e-9, 0.1), 1)
"""Distances of the sweep: 0.1 to 60 miles every 0.1 mile (600 rides per zone pair)."""
HALF_MILE = 5
"""Grid points 0.5 mile apart."""
MAX_STEP_MINUTES = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, tmp_path_factory_metrics):
    with running(tmp_path_factory, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory_metrics)}, workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def tmp_path_factory_metrics(tmp_path_factory):
    return tmp_path_factory.mktemp("prometheus")


def sweep_pairs(n: int = 300, seed: int = 19) -> list[tuple[int, int]]:
    """200 zone pairs the bundled model was trained on, plus 100 drawn from all TLC zones (most unseen)."""
    names = load_file(BUNDLED / "lin_reg.bin").dv.feature_names_
    known = sorted({tuple(int(z) for z in name.split("=", 1)[1].split("_")) for name in names
                    if name.startswith("PU_DO=")})
    rng = random.Random(seed)
    pairs = rng.sample(known, 200)
    while len(pairs) < n:
        pair = (rng.randint(1, 265), rng.randint(1, 265))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def test_every_curve_is_non_decreasing_without_big_steps(server):
    worst_step, rising = 0.0, 0
    for pu, do in sweep_pairs():
        rides = [{"PULocationID": pu, "DOLocationID": do, "trip_distance": float(d)} for d in GRID]
        status, _, body = post_json(server.url + "/predict", rides, timeout=30)
        assert status == 200, body
        minutes = np.asarray(body["durations"])
        assert np.isfinite(minutes).all()
        assert (np.diff(minutes) >= 0).all(), f"{pu}->{do} falls at {GRID[1:][np.diff(minutes) < 0][:3]} miles"
        steps = minutes[HALF_MILE:] - minutes[:-HALF_MILE]
        worst_step = max(worst_step, float(steps.max()))
        assert steps.max() <= MAX_STEP_MINUTES, f"{pu}->{do} rises {steps.max():.2f} min within 0.5 mile"
        rising += minutes[-1] > minutes[0]
    assert rising == 300  # the curves really depend on distance (a flat model would pass the two checks)
    assert worst_step > 1.0


def test_implausible_distance_is_answered_with_a_warning(server):
    status, _, far = post_json(server.url + "/predict", {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 250})
    _, _, ok = post_json(server.url + "/predict", {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4})
    _, _, sixty = post_json(server.url + "/predict", {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 60})
    assert status == 200 and far["duration"] > 0 and far["model_version"]
    assert [w["field"] for w in far["warnings"]] == ["trip_distance"]
    assert far["warnings"][0]["reason"] == "distance_over_max" and "60 miles" in far["warnings"][0]["message"]
    assert far["duration"] == sixty["duration"]  # answered as a 60-mile ride: still monotone
    assert "warnings" not in ok and set(ok) == {"duration", "model_version"}  # the usual answer is unchanged


def test_batch_warnings_name_the_ride(server):
    rides = [{"PULocationID": 74, "DOLocationID": 75, "trip_distance": d} for d in (4.0, 0.0, 250.0, 1.2)]
    status, _, body = post_json(server.url + "/predict", rides)
    assert status == 200 and len(body["durations"]) == 4
    assert [(w["field"], w["reason"]) for w in body["warnings"]] == [
        ("[1].trip_distance", "distance_zero"), ("[2].trip_distance", "distance_over_max")]


def test_far_beyond_the_zone_pair_is_warned(server):
    """74 -> 75 are neighbouring zones: 45 miles is plausible in general, not between them."""
    _, _, body = post_json(server.url + "/predict", {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 45})
    assert [(w["field"], w["reason"]) for w in body["warnings"]] == [("trip_distance", "distance_beyond_zone_pair")]


def test_invocations_and_v2_carry_the_warnings(server):
    rides = [{"PULocationID": 43, "DOLocationID": 151, "trip_distance": d} for d in (1.0, 250.0)]
    status, _, raw = http("POST", server.url + "/invocations", json.dumps({"dataframe_records": rides}),
                          {"Content-Type": "application/json"})
    body = json.loads(raw)
    assert status == 200 and len(body["predictions"]) == 2
    assert [(w["field"], w["reason"]) for w in body["warnings"]] == [("[1].trip_distance", "distance_over_max")]

    tensors = [{"name": "PULocationID", "datatype": "INT64", "shape": [2], "data": [43, 43]},
               {"name": "DOLocationID", "datatype": "INT64", "shape": [2], "data": [151, 151]},
               {"name": "trip_distance", "datatype": "FP64", "shape": [2], "data": [1.0, 250.0]}]
    status, _, raw = http("POST", server.url + "/v2/models/nyc-taxi-ride-duration/infer",
                          json.dumps({"inputs": tensors}), {"Content-Type": "application/json"})
    body = json.loads(raw)
    assert status == 200, body
    warnings = json.loads(body["parameters"]["warnings"])
    assert [(w["field"], w["reason"]) for w in warnings] == [("trip_distance[1]", "distance_over_max")]


def test_warnings_are_counted_in_metrics(server):
    def count() -> float:
        text = http("GET", server.url + "/metrics")[2].decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("ride_duration_ride_warnings_total{")
                   and 'reason="distance_over_max"' in line and 'field="trip_distance"' in line)

    before = count()
    rides = [{"PULocationID": 10, "DOLocationID": 50, "trip_distance": d} for d in (250.0, 3.0, 999.0)]
    assert post_json(server.url + "/predict", rides)[0] == 200
    assert count() == before + 2
