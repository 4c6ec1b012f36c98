"""The monotone regressor (``ride_duration.model.monotone``): fitted on TLC-shaped synthetic rides."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer

from ride_duration.features import (
    BEYOND_PAIR,
    MONOTONE,
    OVER_MAX,
    ZERO_DISTANCE,
    FeatureStep,
    plausible,
    prepare_features,
)
from ride_duration.model.monotone import (
    MAX_STEP_MINUTES,
    MIN_MINUTES,
    CompiledMonotone,
    MonotoneDuration,
    max_window_rise,
    smooth,
)
from ride_duration.model.predictor import LoadedModel
from tests.synthetic import make_rides

STEP = FeatureStep(MONOTONE)


def frame(n: int, seed: int):
    from ride_duration.jobs import data

    rides = data.clean(make_rides(n, seed=seed))
    rides.loc[rides.index % 40 == 3, "trip_distance"] = 0.0      # not recorded
    rides.loc[rides.index % 97 == 5, "trip_distance"] = 5000.0   # a broken odometer
    return rides


@pytest.fixture(scope="module")
def fitted():
    train = frame(6000, seed=1)
    dv = DictVectorizer()
    x = dv.fit_transform(prepare_features(train.to_dict("records"), STEP))
    model = MonotoneDuration(dv.feature_names_).fit(x, train["duration"].to_numpy())
    return dv, model, train


def sweep(model: LoadedModel, pu: int, do: int) -> np.ndarray:
    grid = np.round(np.arange(0.1, 60.0001, 0.1), 1)
    return np.asarray(model.predict([{"PULocationID": pu, "DOLocationID": do, "trip_distance": d} for d in grid]))


def test_every_pair_seen_or_not_is_non_decreasing_with_bounded_steps(fitted):
    dv, regressor, _ = fitted
    model = LoadedModel.build(dv, regressor, version="t", source="test", step=STEP)
    assert isinstance(model.fast, CompiledMonotone)
    for pu, do in [(1, 2), (3, 3), (17, 29), (500, 7), (999, 999)]:
        minutes = sweep(model, pu, do)
        assert (np.diff(minutes) >= 0).all()
        assert (minutes[5:] - minutes[:-5]).max() <= MAX_STEP_MINUTES
        assert minutes.min() >= MIN_MINUTES and minutes[-1] > minutes[0]


def test_it_learns_the_distance_effect(fitted):
    """make_rides draws minutes ≈ 2.5 min/mile plus zone effects and noise (sd 2)."""
    dv, regressor, train = fitted
    valid = frame(3000, seed=2)
    x = dv.transform(prepare_features(valid.to_dict("records"), STEP))
    error = regressor.predict(x) - valid["duration"].to_numpy()
    keep = plausible(valid["trip_distance"], valid["duration"])
    assert np.sqrt(np.mean(error[keep] ** 2)) < 3.0
    assert regressor.n_train_rides_["distance_zero"] == int((train["trip_distance"] == 0).sum())
    assert regressor.n_train_rides_["curves"] < len(train)  # 0 miles and 5000 miles left out of the curves


def test_the_fast_path_is_the_estimator(fitted):
    dv, regressor, _ = fitted
    compiled = CompiledMonotone(dv.feature_names_, regressor)
    rides = [{"PULocationID": pu, "DOLocationID": do, "trip_distance": d}
             for pu in (1, 4, 29, 300) for do in (2, 5, 999) for d in (0.0, 0.05, 0.7, 3.3, 59.0, 61.0, 900.0)]
    expected = regressor.predict(dv.transform(prepare_features(rides, STEP)))
    assert np.allclose(compiled.predict(rides), expected, rtol=1e-12, atol=1e-12)
    assert np.allclose([compiled.predict_one(r) for r in rides], expected, rtol=1e-12, atol=1e-12)
    odd = [{**r, "PULocationID": 2.5} for r in rides[:3]]  # not an integer key: the per-ride path
    assert np.allclose(compiled.predict(odd), [compiled.predict_one(r) for r in odd])


def test_warnings_zero_over_sixty_and_far_beyond_the_pair(fitted):
    dv, regressor, train = fitted
    model = LoadedModel.build(dv, regressor, version="t", source="test", step=STEP)
    ok = train.loc[plausible(train["trip_distance"], train["duration"])]
    longest_by_pair = ok.groupby(["PULocationID", "DOLocationID"])["trip_distance"].max()
    (pu, do), longest = next((pair, v) for pair, v in longest_by_pair.items() if 3 < v < 20)
    far = 2 * longest + 5 + 1  # past the pair's bound, under 60 miles
    rides = [{"PULocationID": int(pu), "DOLocationID": int(do), "trip_distance": d}
             for d in (longest, 0.0, 250.0, far, 4.0)]
    expected = [(1, ZERO_DISTANCE), (2, OVER_MAX), (3, BEYOND_PAIR)]
    assert model.warnings(rides) == expected
    assert model.predict_with_warnings(rides)[1] == expected
    assert model.predict_with_warnings(rides)[0] == model.predict(rides)
    assert [model.warnings([r]) for r in rides] == [[], [(0, ZERO_DISTANCE)], [(0, OVER_MAX)], [(0, BEYOND_PAIR)], []]
    big = rides * 20  # the vectorised path (64 rides or more)
    assert model.warnings(big) == [(i + 5 * k, code) for k in range(20) for i, code in expected]


def test_unknown_pairs_use_their_zones():
    """A pair never seen still gets its zones' effects (not the global average)."""
    rng = np.random.default_rng(0)
    rides = []
    for _ in range(4000):
        pu, do = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        d = float(rng.uniform(0.5, 10))
        slow = 10.0 if pu == 1 else 0.0
        rides.append({"PULocationID": pu, "DOLocationID": do, "trip_distance": d,
                      "duration": min(59.0, 3 + 2.5 * d + slow + rng.normal(0, 1))})
    rides = [r for r in rides if (r["PULocationID"], r["DOLocationID"]) != (1, 4)]  # 1 -> 4 never seen
    dv = DictVectorizer()
    x = dv.fit_transform(prepare_features(rides, STEP))
    model = MonotoneDuration(dv.feature_names_).fit(x, [r["duration"] for r in rides])
    compiled = CompiledMonotone(dv.feature_names_, model)
    unseen = compiled.predict_one({"PULocationID": 1, "DOLocationID": 4, "trip_distance": 5.0})
    other = compiled.predict_one({"PULocationID": 2, "DOLocationID": 4, "trip_distance": 5.0})
    assert unseen - other > 6.0  # zone 1 is 10 minutes slower


def test_the_state_is_plain_arrays_and_numbers(fitted):
    """What a pickle-free format has to store: numpy arrays, floats, ints, strings, tuples, dicts."""
    _, regressor, _ = fitted
    allowed = (np.ndarray, float, int, str, tuple, dict)
    for name, value in vars(regressor).items():
        assert isinstance(value, allowed), (name, type(value))
        if isinstance(value, np.ndarray):
            assert value.dtype.kind == "f", name


def test_smoothing_keeps_a_curve_non_decreasing_and_spreads_jumps():
    x = np.round(np.arange(0, 60.0001, 0.1), 1)
    y = np.where(x < 30, x, x + 20.0)  # a 20-minute jump at 30 miles
    smoothed = smooth(x, y, 0.2)
    assert (np.diff(smoothed) >= -1e-12).all()
    assert max_window_rise(x, smoothed, 0.5) < 5.0 < max_window_rise(x, y, 0.5)
