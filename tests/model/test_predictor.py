import json
import math
import pickle

import numpy as np
import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.tree import DecisionTreeRegressor

from ride_duration.features import FLAGGED, FeatureStep, prepare_features
from ride_duration.model.predictor import (
    GOLDEN_RIDES,
    VERIFY_RTOL,
    LoadedModel,
    ModelCheckError,
    compile_linear,
    sample_rides,
)
from tests.conftest import BUNDLED

RIDES = [
    {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0},
    {"PULocationID": 2, "DOLocationID": 1, "trip_distance": 3.0},
    {"PULocationID": 1, "DOLocationID": 1, "trip_distance": 5.0},
    {"PULocationID": 2, "DOLocationID": 2, "trip_distance": 2.0},
]
DURATIONS = [4.0, 9.0, 12.0, 6.0]


def fitted(regressor):
    dv = DictVectorizer()
    regressor.fit(dv.fit_transform(prepare_features(RIDES)), DURATIONS)
    return dv, regressor


def test_linear_model_gets_the_fast_path():
    dv, lr = fitted(LinearRegression())
    model = LoadedModel.build(dv, lr, version="1", source="test")
    assert model.fast is not None
    rides = sample_rides(model.fast, n=200) + list(GOLDEN_RIDES)
    np.testing.assert_allclose(model.predict(rides), model.predict_general(rides), rtol=1e-12)


def test_other_linear_models_are_compiled_too():
    dv, ridge = fitted(Ridge(alpha=0.5))
    assert LoadedModel.build(dv, ridge, version="1", source="test").fast is not None


def test_non_linear_model_takes_the_general_path():
    dv, tree = fitted(DecisionTreeRegressor(random_state=0))
    model = LoadedModel.build(dv, tree, version="1", source="test")
    actual = model.predict(RIDES)
    assert model.fast is None
    assert actual == pytest.approx(DURATIONS)


def test_unknown_feature_disables_the_fast_path():
    dv = DictVectorizer()
    features = [{**f, "hour": 3.0} for f in prepare_features(RIDES)]
    lr = LinearRegression().fit(dv.fit_transform(features), DURATIONS)
    assert compile_linear(dv, lr) is None


def test_the_bundled_model_fast_path_matches_sklearn_with_its_feature_step():
    """Single rides and batches, across the step's cases: 0 miles, ordinary, above max_miles, 1000."""
    with open(BUNDLED / "lin_reg.bin", "rb") as f:
        dv, lr = pickle.load(f)
    step = FeatureStep.from_dict(json.loads((BUNDLED / "metadata.json").read_text()).get("feature_step"))
    model = LoadedModel.build(dv, lr, version="b", source="bundled", step=step)
    assert model.fast is not None and model.step == step
    rides = [{"PULocationID": pu, "DOLocationID": do, "trip_distance": d}
             for pu, do in ((10, 50), (43, 151), (7, 7), (999, 1))
             for d in (0.0, 0.3, 4.0, 29.9, 30.0, 30.1, 40.0, 1000.0)]
    expected = lr.predict(dv.transform(prepare_features(rides, step)))
    np.testing.assert_allclose(model.predict(rides), expected, rtol=VERIFY_RTOL, atol=0)
    singles = [model.predict([ride])[0] for ride in rides]
    np.testing.assert_allclose(singles, expected, rtol=VERIFY_RTOL, atol=0)


def test_flagged_step_fast_path_learns_and_matches_sklearn():
    step = FeatureStep(FLAGGED, 10.0)
    rides = RIDES + [{"PULocationID": 1, "DOLocationID": 2, "trip_distance": 0.0},
                     {"PULocationID": 2, "DOLocationID": 1, "trip_distance": 500.0}]
    dv = DictVectorizer()
    lr = LinearRegression().fit(dv.fit_transform(prepare_features(rides, step)), DURATIONS + [20.0, 25.0])
    model = LoadedModel.build(dv, lr, version="f", source="test", step=step)
    probe = sample_rides(model.fast, n=300) + list(GOLDEN_RIDES)
    assert model.fast is not None and model.fast.numeric_weights[1] != 0.0
    np.testing.assert_allclose(model.predict(probe), model.predict_general(probe), rtol=VERIFY_RTOL, atol=0)
    assert model.predict([probe[0]])[0] == pytest.approx(model.predict_general([probe[0]])[0], rel=VERIFY_RTOL)
    assert model.info["feature_step"] == {"name": FLAGGED, "max_miles": 10.0}


def test_a_course_model_under_the_flagged_step_is_not_compiled_blindly():
    """The course's pair has no indicator weights: compiled with zeros they would drop out, so the
    fast path still equals sklearn for the same step (it is verified, never assumed)."""
    dv, lr = fitted(LinearRegression())
    step = FeatureStep(FLAGGED, 2.5)
    model = LoadedModel.build(dv, lr, version="1", source="test", step=step)
    probe = sample_rides(model.fast, n=100)
    np.testing.assert_allclose(model.predict(probe), model.predict_general(probe), rtol=VERIFY_RTOL, atol=0)


def test_unknown_zone_pair_uses_distance_and_intercept():
    dv, lr = fitted(LinearRegression())
    model = LoadedModel.build(dv, lr, version="1", source="test")
    ride = {"PULocationID": 999, "DOLocationID": 999, "trip_distance": 2.0}
    assert model.predict([ride])[0] == pytest.approx(lr.intercept_ + 2.0 * lr.coef_[dv.vocabulary_["trip_distance"]])


def test_nan_weights_fail_the_self_test():
    dv, lr = fitted(LinearRegression())
    lr.coef_ = np.full_like(lr.coef_, math.nan)
    with pytest.raises(ModelCheckError, match="NaN"):
        LoadedModel.build(dv, lr, version="bad", source="test")


def test_regressor_that_raises_fails_the_self_test():
    class Broken:
        def predict(self, x):
            raise RuntimeError("boom")

    dv, _ = fitted(LinearRegression())
    with pytest.raises(ModelCheckError, match="raised RuntimeError"):
        LoadedModel.build(dv, Broken(), version="bad", source="test")


def test_wrong_output_shape_fails_the_self_test():
    class TwoOutputs:
        def predict(self, x):
            return np.zeros((x.shape[0], 2))

    dv, _ = fitted(LinearRegression())
    with pytest.raises(ModelCheckError, match="shape"):
        LoadedModel.build(dv, TwoOutputs(), version="bad", source="test")


def test_not_a_pair_is_refused():
    with pytest.raises(ModelCheckError):
        LoadedModel.build(object(), object(), version="x", source="test")
