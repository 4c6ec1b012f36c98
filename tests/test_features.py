import numpy as np
import pytest

from ride_duration.features import (
    BEYOND_PAIR,
    COURSE_STEP,
    FLAGGED,
    MONOTONE,
    OVER_MAX,
    WARNING_REASONS,
    ZERO_DISTANCE,
    FeatureStep,
    FeatureStepError,
    distance_warning,
    distance_warnings,
    far_bound,
    plausible,
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
    ({"name": MONOTONE, "max_miles": 0}, "needs a positive finite max_miles"),
])
def test_bad_feature_steps_are_refused_with_the_reason(spec, problem):
    with pytest.raises(FeatureStepError, match=problem):
        FeatureStep.from_dict(spec)


def test_monotone_step_adds_the_zones_on_their_own():
    step = FeatureStep.from_dict({"name": MONOTONE})
    assert step.max_miles == 60.0 and step.to_dict() == {"name": MONOTONE, "max_miles": 60.0}
    assert step.categorical == ("PU_DO", "PU", "DO") and step.numeric == ("trip_distance",)
    assert ride_features({"PULocationID": 7.0, "DOLocationID": 138, "trip_distance": 250}, step) == {
        "PU_DO": "7_138", "PU": "7", "DO": "138", "trip_distance": 250.0}


def test_plausible_rides_need_a_distance_and_a_possible_speed():
    miles = np.array([0.0, 0.5, 60.0, 60.01, 244152.0, 10.0, 10.0])
    minutes = np.array([18.0, 5.0, 59.0, 59.0, 3.0, 7.6, 7.4])  # 10 miles in 7.5 minutes is 80 mph
    assert plausible(miles, minutes).tolist() == [False, True, True, False, False, True, False]


def test_serving_warnings_for_zero_over_sixty_and_beyond_the_pair():
    assert [distance_warning(d, 12.0) for d in (0.0, 4.0, 12.0, 12.5, 60.5)] == [
        ZERO_DISTANCE, None, None, BEYOND_PAIR, OVER_MAX]
    assert distance_warning(59.0) is None  # a pair without a learned bound: the global rule only
    d = np.array([4.0, 0.0, 250.0, 30.0, 30.0])
    assert distance_warnings(d, np.array([9.0, 9.0, 9.0, 25.0, np.inf])) == [
        (1, ZERO_DISTANCE), (2, OVER_MAX), (3, BEYOND_PAIR)]
    assert set(WARNING_REASONS) == {ZERO_DISTANCE, OVER_MAX, BEYOND_PAIR}
    assert far_bound(np.array([2.0])).tolist() == [9.0]
