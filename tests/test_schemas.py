import math

import pytest

from ride_duration.errors import InvalidInput, PayloadTooLarge
from ride_duration.schemas import ZONE_PROBLEM, validate_rides

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}


def problems(exc: InvalidInput) -> dict[str, str]:
    return {d["field"]: d["problem"] for d in exc.details or []}


def test_single_ride_is_not_a_batch():
    rides, is_batch = validate_rides(RIDE, 10)
    assert rides == [{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0}]
    assert is_batch is False


def test_extra_fields_are_dropped():
    rides, _ = validate_rides({**RIDE, "VendorID": 2, "lpep_pickup_datetime": "2021-01-01"}, 10)
    assert set(rides[0]) == {"PULocationID", "DOLocationID", "trip_distance"}


def test_integral_float_zone_is_accepted():
    rides, _ = validate_rides({**RIDE, "PULocationID": 10.0}, 10)
    assert rides[0]["PULocationID"] == 10


@pytest.mark.parametrize("value", [10.5, True, False, "10", None, [10], 0, 1000, -3, math.inf])
def test_bad_zone_is_named(value):
    with pytest.raises(InvalidInput) as info:
        validate_rides({**RIDE, "PULocationID": value}, 10)
    assert problems(info.value) == {"PULocationID": ZONE_PROBLEM}


@pytest.mark.parametrize("value,fragment", [
    (-1, "greater than or equal to 0"),
    (math.nan, "finite"),
    (math.inf, "finite"),
    (True, "valid number"),
    ("3.5", "valid number"),
    (1000.5, "less than or equal to 1000"),
])
def test_bad_distance_is_named(value, fragment):
    with pytest.raises(InvalidInput) as info:
        validate_rides({**RIDE, "trip_distance": value}, 10)
    assert list(problems(info.value)) == ["trip_distance"]
    assert fragment in problems(info.value)["trip_distance"]


def test_missing_field_is_reported():
    with pytest.raises(InvalidInput) as info:
        validate_rides({"PULocationID": 1}, 10)
    assert problems(info.value) == {"DOLocationID": "field required", "trip_distance": "field required"}


def test_batch_errors_carry_the_index():
    with pytest.raises(InvalidInput) as info:
        validate_rides([RIDE, {**RIDE, "trip_distance": -2}, "x"], 10)
    assert set(problems(info.value)) == {"[1].trip_distance", "[2]"}


def test_error_details_never_echo_the_value():
    with pytest.raises(InvalidInput) as info:
        validate_rides({**RIDE, "PULocationID": "SECRET-VALUE-123"}, 10)
    assert "SECRET-VALUE-123" not in repr(info.value.to_dict())


def test_many_errors_are_capped():
    with pytest.raises(InvalidInput) as info:
        validate_rides([{**RIDE, "trip_distance": -1}] * 100, 1000)
    assert len(info.value.details) == 20
    assert info.value.message.startswith("100 invalid field(s)")


def test_empty_batch_is_invalid():
    with pytest.raises(InvalidInput):
        validate_rides([], 10)


def test_batch_over_the_limit_is_too_large():
    with pytest.raises(PayloadTooLarge):
        validate_rides([RIDE] * 11, 10)
    rides, is_batch = validate_rides([RIDE] * 10, 10)
    assert len(rides) == 10 and is_batch


@pytest.mark.parametrize("payload", [42, "ride", None, True])
def test_body_must_be_object_or_array(payload):
    with pytest.raises(InvalidInput):
        validate_rides(payload, 10)
