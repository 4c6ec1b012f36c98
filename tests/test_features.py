from ride_duration.features import prepare_features, ride_features, rides_to_features


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
