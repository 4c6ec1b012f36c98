"""The feature step, shared by training, serving, batch scoring (local and Spark) and the MLflow model.

A ride becomes a dictionary for a ``DictVectorizer``: ``PU_DO = "<PU>_<DO>"`` (one-hot) plus
numeric distance features. Which numeric features depends on the model's *feature step*,
recorded with the model (``metadata.json`` ``"feature_step"``, the logged pipeline's
``FunctionTransformer`` arguments and the model version's ``feature_step`` tag):

* ``course-v1`` (the course's step; any model that does not say otherwise):
  ``trip_distance`` as given.
* ``flagged-v2``: a distance above ``max_miles`` (implausible for a 1–60 minute ride) or of
  exactly 0 (not recorded) carries no information about the ride's length, so
  ``trip_distance`` is kept only for ``0 < d <= max_miles`` and is 0 otherwise, and two
  0/1 indicators, ``distance_implausible`` (``d > max_miles``) and ``distance_zero``
  (``d == 0``), let the model learn what those rides take instead.
* ``monotone-v3``: ``trip_distance`` as given plus the pickup and drop-off zones on their own
  (``PU``, ``DO`` one-hots, so a zone pair never seen in training still gets its zones'
  effects). The regressor (:mod:`ride_duration.model.monotone`) clips the distance at
  ``max_miles`` and is non-decreasing in it by construction.

The plausibility rule (:func:`plausible`, :func:`distance_warnings`) lives here too, so that
training (which drops implausible rides), the metrics (RMSE on plausible rides) and serving
(which answers them with a warning) apply the same rule.

This module imports nothing but the standard library and numpy: the logged MLflow model
carries a copy of it as its only code.
"""

from __future__ import annotations

import dataclasses
import typing as t

if t.TYPE_CHECKING:
    import numpy as np

RAW_COLUMNS: tuple[str, ...] = ("PULocationID", "DOLocationID", "trip_distance")
"""The ride fields the model reads; everything else in a record is ignored."""

CATEGORICAL = "PU_DO"
NUMERICAL = "trip_distance"
IMPLAUSIBLE = "distance_implausible"
ZERO = "distance_zero"
PICKUP = "PU"
DROPOFF = "DO"

COURSE = "course-v1"
FLAGGED = "flagged-v2"
MONOTONE = "monotone-v3"
STEPS = (COURSE, FLAGGED, MONOTONE)
DEFAULT_MAX_MILES = 30.0

MAX_PLAUSIBLE_MILES = 60.0
"""A 1–60 minute ride over more miles than this is implausible (TLC files hold 244,152-mile rides)."""
MAX_PLAUSIBLE_MPH = 80.0
"""A ride at this average speed or faster is implausible (a bad distance or bad timestamps)."""
FAR_FACTOR = 2.0
FAR_MARGIN_MILES = 5.0
"""A distance over ``FAR_FACTOR`` × the longest plausible training ride of its zone pair plus
``FAR_MARGIN_MILES`` is "far beyond what this pair has ever seen" (learned per pair, shipped with
the model)."""

ZERO_DISTANCE = "distance_zero"
OVER_MAX = "distance_over_max"
BEYOND_PAIR = "distance_beyond_zone_pair"
WARNING_REASONS = {
    ZERO_DISTANCE: "a distance of 0 means the distance was not recorded: the duration is the zone pair's "
                   "typical ride of unknown distance",
    OVER_MAX: f"over {MAX_PLAUSIBLE_MILES:g} miles is implausible for a ride of at most 60 minutes: "
              f"answered as a {MAX_PLAUSIBLE_MILES:g}-mile ride",
    BEYOND_PAIR: "far beyond the longest ride seen between these two zones in the training data",
}
"""Warning code → the sentence a client reads (``warnings[].reason`` is the code, ``message`` this)."""


class FeatureStepError(ValueError):
    """A model names a feature step this code does not know, or gives it bad parameters."""


@dataclasses.dataclass(frozen=True)
class FeatureStep:
    """Which feature step a model needs, with its parameters."""

    name: str = COURSE
    max_miles: float | None = None

    def __post_init__(self) -> None:
        if self.name not in STEPS:
            raise FeatureStepError(f"unknown feature step {self.name!r} (known: {', '.join(STEPS)})")
        if self.name == FLAGGED:
            if not isinstance(self.max_miles, int | float) or isinstance(self.max_miles, bool) \
                    or not 0 < self.max_miles < float("inf"):
                raise FeatureStepError(f"feature step {FLAGGED} needs a positive finite max_miles")
            object.__setattr__(self, "max_miles", float(self.max_miles))
        elif self.name == MONOTONE:
            if self.max_miles is None:
                object.__setattr__(self, "max_miles", MAX_PLAUSIBLE_MILES)
            if not isinstance(self.max_miles, int | float) or isinstance(self.max_miles, bool) \
                    or not 0 < self.max_miles < float("inf"):
                raise FeatureStepError(f"feature step {MONOTONE} needs a positive finite max_miles")
            object.__setattr__(self, "max_miles", float(self.max_miles))
        elif self.max_miles is not None:
            raise FeatureStepError(f"feature step {COURSE} takes no max_miles")

    @property
    def numeric(self) -> tuple[str, ...]:
        """Names of the numeric features, in the order the fast path adds them."""
        return (NUMERICAL, IMPLAUSIBLE, ZERO) if self.name == FLAGGED else (NUMERICAL,)

    @property
    def categorical(self) -> tuple[str, ...]:
        """Names of the one-hot features (``PU_DO`` always; ``PU`` and ``DO`` for ``monotone-v3``)."""
        return (CATEGORICAL, PICKUP, DROPOFF) if self.name == MONOTONE else (CATEGORICAL,)

    def to_dict(self) -> dict[str, t.Any]:
        """The JSON form stored with a model: ``{"name": ...}`` plus the parameters."""
        return {"name": self.name} if self.name == COURSE else {"name": self.name, "max_miles": self.max_miles}

    @classmethod
    def from_dict(cls, spec: t.Mapping[str, t.Any] | FeatureStep | None) -> FeatureStep:
        """The step a model's record names; ``None`` (a model without the field) is the course's.

        :raises FeatureStepError: unknown name or bad parameters.
        """
        if spec is None:
            return cls()
        if isinstance(spec, FeatureStep):
            return spec
        if not isinstance(spec, t.Mapping) or set(spec) - {"name", "max_miles"}:
            raise FeatureStepError(f"feature step must be {{'name', 'max_miles'?}}, got {spec!r}")
        return cls(spec.get("name", COURSE), spec.get("max_miles"))

    def distance_features(self, distance: float) -> dict[str, float]:
        """The numeric features of one ride."""
        if self.name != FLAGGED:
            return {NUMERICAL: distance}
        implausible = distance > self.max_miles  # type: ignore[operator]
        zero = distance == 0.0
        return {NUMERICAL: 0.0 if implausible else distance,
                IMPLAUSIBLE: 1.0 if implausible else 0.0, ZERO: 1.0 if zero else 0.0}

    def distance_columns(self, distance: np.ndarray) -> list[np.ndarray]:
        """:attr:`numeric` features of many rides at once (same values as :meth:`distance_features`)."""
        import numpy as np

        if self.name != FLAGGED:
            return [distance]
        implausible = distance > self.max_miles
        return [np.where(implausible, 0.0, distance), implausible.astype(float), (distance == 0.0).astype(float)]


COURSE_STEP = FeatureStep()
FITTED_STEP_ATTRIBUTE = "feature_step_"
"""Training sets this attribute on the fitted ``DictVectorizer`` (the step's JSON form)."""


def fitted_step(dv: t.Any, recorded: t.Mapping[str, t.Any] | None = None) -> FeatureStep:
    """The step a fitted pair needs: ``recorded`` if given, else what training set on the vectorizer,
    else the course's (a vectorizer from before feature steps)."""
    return FeatureStep.from_dict(recorded or getattr(dv, FITTED_STEP_ATTRIBUTE, None))


def ride_features(ride: t.Mapping[str, t.Any], step: FeatureStep = COURSE_STEP) -> dict[str, t.Any]:
    """Turn one ride into the dictionary the ``DictVectorizer`` expects."""
    pu, do = int(ride["PULocationID"]), int(ride["DOLocationID"])
    if step.name == MONOTONE:
        return {CATEGORICAL: f"{pu}_{do}", PICKUP: str(pu), DROPOFF: str(do), NUMERICAL: float(ride["trip_distance"])}
    return {CATEGORICAL: f"{pu}_{do}", **step.distance_features(float(ride["trip_distance"]))}


def prepare_features(rides: t.Iterable[t.Mapping[str, t.Any]],
                     step: FeatureStep = COURSE_STEP) -> list[dict[str, t.Any]]:
    """Feature dictionaries for many rides, in input order."""
    return [ride_features(ride, step) for ride in rides]


def frame_to_rides(frame: t.Any) -> list[dict[str, t.Any]]:
    """Rides from a pandas ``DataFrame`` (or anything with ``to_dict("records")``).

    Used by the MLflow-logged pipeline, whose pyfunc flavour hands it a frame.
    """
    if hasattr(frame, "to_dict"):
        return frame[list(RAW_COLUMNS)].to_dict("records")
    return list(frame)


def rides_to_features(rides: t.Any, step: t.Mapping[str, t.Any] | None = None) -> list[dict[str, t.Any]]:
    """``FunctionTransformer`` target: a frame or a list of rides to feature dicts.

    ``step`` is the JSON form of the feature step (the transformer's ``kw_args``); a pipeline
    logged before feature steps existed passes none and gets the course's.
    """
    return prepare_features(frame_to_rides(rides), FeatureStep.from_dict(step))


def plausible(distance: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """The plausibility rule for rides with a known duration (training and the metrics).

    Plausible: ``0 < trip_distance <= MAX_PLAUSIBLE_MILES`` and an average speed under
    ``MAX_PLAUSIBLE_MPH``. The rest (0 = not recorded, 244,152 miles, 300 mph) are TLC data
    errors; training drops them and ``valid_rmse_plausible`` leaves them out.
    """
    import numpy as np

    distance = np.asarray(distance, dtype=float)
    minutes = np.asarray(minutes, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = distance / (minutes / 60.0)
    return (distance > 0) & (distance <= MAX_PLAUSIBLE_MILES) & (speed < MAX_PLAUSIBLE_MPH)


def distance_warning(distance: float, far_miles: float = float("inf")) -> str | None:
    """The serving side of the rule for one ride (no duration yet): a warning code, or None.

    ``far_miles`` is the ride's zone-pair bound learned in training (inf when unknown).
    """
    if distance <= 0:
        return ZERO_DISTANCE
    if distance > MAX_PLAUSIBLE_MILES:
        return OVER_MAX
    if distance > far_miles:
        return BEYOND_PAIR
    return None


def distance_warnings(distance: np.ndarray, far_miles: np.ndarray | None = None) -> list[tuple[int, str]]:
    """:func:`distance_warning` for many rides: ``(index, code)`` of the rides that get one."""
    import numpy as np

    distance = np.asarray(distance, dtype=float)
    codes = np.where(distance <= 0, 1, np.where(distance > MAX_PLAUSIBLE_MILES, 2, 0))
    if far_miles is not None:
        codes = np.where((codes == 0) & (distance > far_miles), 3, codes)
    names = (None, ZERO_DISTANCE, OVER_MAX, BEYOND_PAIR)
    return [(int(i), names[codes[i]]) for i in np.flatnonzero(codes)]  # type: ignore[misc]


def far_bound(longest_seen: np.ndarray) -> np.ndarray:
    """The "far beyond" bound of zone pairs whose longest plausible training ride was ``longest_seen``."""
    return FAR_FACTOR * longest_seen + FAR_MARGIN_MILES
