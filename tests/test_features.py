import numpy as np
import pytest

from ride_duration.features import (
    COURSE_STEP,
    FLAGGED,
    FeatureStep,
    FeatureStepError,
    prepare_features,
    ride_features,
    rides_to_features,
)


def test_ride_features():
    actual = ride_features({"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40, "VendorID": 2})
    expected = {"PU_DO": "10_50", "trip_distance": 40.0}
    assert actual == expected


def test_integral_float_zones_give_the_same_key():
    assert ride_features({"PULocationID": 10.0, "DOLocationID": 50.0, "trip_distance": 1})["PU_DO"] == "10_50"


def test_prepare_features_keeps_order():
    rides = [{"PULocationID": i, "DOLocationID": 1, "trip_distance": i} for i in range(1, 5)]
    assert [f["PU_DO"] for f in prepare_features(rides)] == ["1_1", "2_1", "3_1", "4_1"]


def test_rides_to_features_accepts_a_frame():
    import pandas as pd

    frame = pd.DataFrame({"PULocationID": [3], "DOLocationID": [4], "trip_distance": [1.5], "other": ["x"]})
    assert rides_to_features(frame) == [{"PU_DO": "3_4", "trip_distance": 1.5}]


FLAGGED_30 = FeatureStep(FLAGGED, 30.0)


def test_a_model_without_a_feature_step_gets_the_course_step():
    assert FeatureStep.from_dict(None) == COURSE_STEP == FeatureStep.from_dict({"name": "course-v1"})
    assert COURSE_STEP.to_dict() == {"name": "course-v1"}


def test_flagged_step_keeps_plausible_distances_and_flags_the_rest():
    def numeric(d):
        return {k: v for k, v in ride_features({"PULocationID": 1, "DOLocationID": 2, "trip_distance": d},
                                               FLAGGED_30).items() if k != "PU_DO"}

    assert numeric(4.5) == {"trip_distance": 4.5, "distance_implausible": 0.0, "distance_zero": 0.0}
    assert numeric(30) == {"trip_distance": 30.0, "distance_implausible": 0.0, "distance_zero": 0.0}
    assert numeric(30.01) == {"trip_distance": 0.0, "distance_implausible": 1.0, "distance_zero": 0.0}
    assert numeric(0) == {"trip_distance": 0.0, "distance_implausible": 0.0, "distance_zero": 1.0}


def test_the_vectorised_columns_equal_the_per_ride_features():
    distances = np.array([0.0, 0.01, 2.5, 30.0, 30.5, 244152.01])
    columns = FLAGGED_30.distance_columns(distances)
    for i, d in enumerate(distances.tolist()):
        assert [c[i] for c in columns] == [FLAGGED_30.distance_features(d)[k] for k in FLAGGED_30.numeric]


def test_the_step_round_trips_through_its_json_form():
    assert FeatureStep.from_dict(FLAGGED_30.to_dict()) == FLAGGED_30
    assert rides_to_features([{"PULocationID": 3, "DOLocationID": 4, "trip_distance": 99.0}], FLAGGED_30.to_dict()) == [
        {"PU_DO": "3_4", "trip_distance": 0.0, "distance_implausible": 1.0, "distance_zero": 0.0}]


@pytest.mark.parametrize("spec, problem", [
    ({"name": "cubic-v9"}, "unknown feature step"),
    ({"name": FLAGGED}, "needs a positive finite max_miles"),
    ({"name": FLAGGED, "max_miles": -1}, "needs a positive finite max_miles"),
    ({"name": FLAGGED, "max_miles": float("inf")}, "needs a positive finite max_miles"),
    ({"name": "course-v1", "max_miles": 30}, "takes no max_miles"),
    ({"name": FLAGGED, "max_miles": 30, "extra": 1}, "must be"),
])
def test_bad_feature_steps_are_refused_with_the_reason(spec, problem):
    with pytest.raises(FeatureStepError, match=problem):
        FeatureStep.from_dict(spec)
