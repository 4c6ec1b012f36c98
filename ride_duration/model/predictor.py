"""A loaded model, its metadata, and the fast path for linear models.

A ``(DictVectorizer, linear regressor)`` pair whose only features are ``PU_DO=…``
one-hots and the numeric features of its feature step (``ride_duration.features``:
``trip_distance`` for the course's step) is compiled at load time into a dictionary of
``PU_DO`` weights plus one weight per numeric feature: a prediction is then one lookup and
a few multiply-adds instead of ~170 µs of scikit-learn input checking. The compiled form is
used only after it matches scikit-learn on a sample to 1e-9 relative; any other
model takes the general path.
"""

from __future__ import annotations

import dataclasses
import math
import random
import typing as t
from operator import itemgetter

import numpy as np

from ..features import CATEGORICAL, COURSE_STEP, FeatureStep, prepare_features

VERIFY_RTOL = 1e-9
GOLDEN_RIDES: tuple[dict[str, t.Any], ...] = (
    {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0},
    {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01},
    {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 0.0},
    {"PULocationID": 1, "DOLocationID": 265, "trip_distance": 12.5},
    {"PULocationID": 999, "DOLocationID": 999, "trip_distance": 1000.0},
    {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 35.0},
)
"""Rides every model must answer with finite numbers before it may serve."""


class ModelCheckError(Exception):
    """A model failed its load-time checks (shape, finiteness, fast-path agreement)."""


ZONE_KEY_BASE = 1 << 20
"""Integer key of a zone pair in the batch path: ``PU * ZONE_KEY_BASE + DO``."""


@dataclasses.dataclass(frozen=True)
class CompiledLinear:
    """``duration = w[PU_DO] + Σ w_k * f_k(trip_distance) + intercept``.

    ``f_k`` are the feature step's numeric features (``step.numeric``; for the course's step
    just ``trip_distance``, so ``w[PU_DO] + w_distance * trip_distance + intercept``).

    ``weights`` serves one ride (one string lookup). A batch looks its zone pairs up all at
    once: ``pair_keys`` (sorted ``PU * ZONE_KEY_BASE + DO`` of every canonical ``"<PU>_<DO>"``
    weight) and ``pair_weights`` in the same order, searched with ``np.searchsorted``.
    """

    weights: dict[str, float]
    distance_weight: float
    intercept: float
    step: FeatureStep = COURSE_STEP
    numeric_weights: tuple[float, ...] = ()
    """Weights of ``step.numeric`` in order (the first is ``distance_weight``); set from it if empty."""
    pair_keys: np.ndarray = dataclasses.field(default=None, repr=False)  # type: ignore[assignment]
    pair_weights: np.ndarray = dataclasses.field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self.numeric_weights:
            object.__setattr__(self, "numeric_weights", (self.distance_weight,))
        if len(self.numeric_weights) != len(self.step.numeric):
            raise ValueError(f"{len(self.step.numeric)} numeric weights needed for {self.step.name}")
        if self.pair_keys is None:
            keys, values = pair_index(self.weights)
            object.__setattr__(self, "pair_keys", keys)
            object.__setattr__(self, "pair_weights", values)

    def predict_one(self, ride: t.Mapping[str, t.Any]) -> float:
        key = f"{int(ride['PULocationID'])}_{int(ride['DOLocationID'])}"
        if len(self.numeric_weights) == 1:  # the course's step: trip_distance as given
            return (self.weights.get(key, 0.0) + self.distance_weight * ride["trip_distance"]) + self.intercept
        total = self.weights.get(key, 0.0)
        values = self.step.distance_features(float(ride["trip_distance"]))
        for name, w in zip(self.step.numeric, self.numeric_weights, strict=True):
            total += w * values[name]
        return total + self.intercept

    def predict(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> np.ndarray:
        n = len(rides)
        dist = np.fromiter(map(itemgetter("trip_distance"), rides), float, n)
        try:
            w = self.pair_weight(np.fromiter(map(itemgetter("PULocationID"), rides), float, n),
                                 np.fromiter(map(itemgetter("DOLocationID"), rides), float, n))
        except (OverflowError, TypeError, ValueError):
            w = None
        if w is None:  # a zone the integer keys cannot express exactly: one string lookup per ride
            get = self.weights.get
            w = np.fromiter(
                (get(f"{int(r['PULocationID'])}_{int(r['DOLocationID'])}", 0.0) for r in rides), float, n)
        for column, weight in zip(self.step.distance_columns(dist), self.numeric_weights, strict=True):
            w = w + weight * column
        return w + self.intercept

    def pair_weight(self, pu: np.ndarray, do: np.ndarray) -> np.ndarray | None:
        """``w[PU_DO]`` for whole columns of integral zone IDs in ``[0, ZONE_KEY_BASE)``, else None."""
        if not len(self.pair_keys) or not len(pu):
            return None
        pu_int, do_int = pu.astype(np.int64), do.astype(np.int64)
        if not ((pu_int == pu).all() and (do_int == do).all()
                and pu_int.min() >= 0 and do_int.min() >= 0
                and pu_int.max() < ZONE_KEY_BASE and do_int.max() < ZONE_KEY_BASE):
            return None
        key = pu_int * ZONE_KEY_BASE + do_int
        at = np.searchsorted(self.pair_keys, key)
        np.minimum(at, len(self.pair_keys) - 1, out=at)
        return np.where(self.pair_keys[at] == key, self.pair_weights[at], 0.0)


def pair_index(weights: t.Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted integer keys and weights of every ``"<PU>_<DO>"`` spelled as ``f"{int}_{int}"`` would.

    Other spellings (``"01_5"``) can never equal a ride's key, so leaving them out is exact.
    """
    keys, values = [], []
    for name, w in weights.items():
        pu, sep, do = name.partition("_")
        if sep and pu.isdigit() and do.isdigit() and str(int(pu)) == pu and str(int(do)) == do \
                and int(pu) < ZONE_KEY_BASE and int(do) < ZONE_KEY_BASE:
            keys.append(int(pu) * ZONE_KEY_BASE + int(do))
            values.append(w)
    order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
    return np.asarray(keys, dtype=np.int64)[order], np.asarray(values, dtype=float)[order]


def compile_linear(dv: t.Any, regressor: t.Any, step: FeatureStep = COURSE_STEP) -> CompiledLinear | None:
    """The lookup form of a DictVectorizer + linear model for ``step``, or None if it has another shape."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model._base import LinearModel

    if not isinstance(dv, DictVectorizer) or not isinstance(regressor, LinearModel):
        return None
    coef = np.asarray(getattr(regressor, "coef_", None), dtype=float)
    names = list(getattr(dv, "feature_names_", []))
    if coef.ndim != 1 or coef.shape[0] != len(names):
        return None
    prefix = CATEGORICAL + dv.separator
    weights: dict[str, float] = {}
    numeric = dict.fromkeys(step.numeric, 0.0)
    for name, w in zip(names, coef.tolist(), strict=False):
        if name in numeric:
            numeric[name] = w
        elif name.startswith(prefix):
            weights[name[len(prefix):]] = w
        else:
            return None
    intercept = float(np.ravel(regressor.intercept_)[0]) if np.ndim(regressor.intercept_) else float(
        regressor.intercept_)
    numeric_weights = tuple(numeric.values())
    return CompiledLinear(weights, numeric_weights[0], intercept, step, numeric_weights)


def sample_rides(compiled: CompiledLinear, n: int = 512, seed: int = 0) -> list[dict[str, t.Any]]:
    """Rides that exercise known and unknown zone pairs, for verification."""
    rng = random.Random(seed)  # noqa: S311 - seeded test rides, not a secret
    keys = sorted(compiled.weights)
    rides = []
    for i in range(n):
        if keys and i % 4:
            pu, do = (int(p) for p in rng.choice(keys).split("_"))
        else:
            pu, do = rng.randint(1, 999), rng.randint(1, 999)
        distance = rng.uniform(0, 60)
        rides.append({"PULocationID": pu, "DOLocationID": do, "trip_distance": 0.0 if i % 16 == 5 else distance})
    return rides


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A ready-to-serve model: the pipeline, its feature step, its fast path, and what it is."""

    dv: t.Any
    regressor: t.Any
    version: str
    source: str
    info: dict[str, t.Any]
    fast: CompiledLinear | None = None
    step: FeatureStep = COURSE_STEP

    @classmethod
    def build(cls, dv: t.Any, regressor: t.Any, *, version: str, source: str,
              info: dict[str, t.Any] | None = None, step: FeatureStep = COURSE_STEP) -> LoadedModel:
        """Check the pair, compile and verify the fast path, run the golden self-test.

        :raises ModelCheckError: the model is not fit to serve.
        """
        if not hasattr(dv, "transform") or not hasattr(regressor, "predict"):
            raise ModelCheckError("expected a (DictVectorizer, regressor) pair")
        model = cls(dv, regressor, version, source, dict(info or {}), step=step)
        fast = compile_linear(dv, regressor, step)
        if fast is not None:
            rides = sample_rides(fast) + list(GOLDEN_RIDES)
            expected = model.predict_general(rides)
            actual = fast.predict(rides)
            if np.allclose(actual, expected, rtol=VERIFY_RTOL, atol=0.0):
                model = dataclasses.replace(model, fast=fast)
        model.info["fast_path"] = model.fast is not None
        model.info["feature_step"] = step.to_dict()
        model.self_test()
        return model

    def predict_general(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> np.ndarray:
        """scikit-learn's own path: vectorize, then predict."""
        return np.asarray(self.regressor.predict(self.dv.transform(prepare_features(rides, self.step))),
                          dtype=float)

    def predict(self, rides: t.Sequence[t.Mapping[str, t.Any]]) -> list[float]:
        """Durations in minutes, in input order, one model call for the batch."""
        if self.fast is not None:
            if len(rides) == 1:
                return [self.fast.predict_one(rides[0])]
            return self.fast.predict(rides).tolist()
        return self.predict_general(rides).ravel().tolist()

    def self_test(self) -> None:
        """The golden rides must give one finite float each.

        :raises ModelCheckError: on an exception, a wrong shape, or NaN/inf.
        """
        try:
            out = np.asarray(self.predict_general(list(GOLDEN_RIDES)), dtype=float)
        except Exception as exc:  # noqa: BLE001 - any failure disqualifies the model
            raise ModelCheckError(f"self-test raised {type(exc).__name__}") from exc
        if out.shape != (len(GOLDEN_RIDES),):
            raise ModelCheckError(f"self-test output has shape {out.shape}, expected ({len(GOLDEN_RIDES)},)")
        if not all(math.isfinite(v) for v in out.tolist()):
            raise ModelCheckError("self-test produced NaN or infinite predictions")
