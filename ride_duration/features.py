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

COURSE = "course-v1"
FLAGGED = "flagged-v2"
STEPS = (COURSE, FLAGGED)
DEFAULT_MAX_MILES = 30.0


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
        elif self.max_miles is not None:
            raise FeatureStepError(f"feature step {COURSE} takes no max_miles")

    @property
    def numeric(self) -> tuple[str, ...]:
        """Names of the numeric features, in the order the fast path adds them."""
        return (NUMERICAL,) if self.name == COURSE else (NUMERICAL, IMPLAUSIBLE, ZERO)

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
        if self.name == COURSE:
            return {NUMERICAL: distance}
        implausible = distance > self.max_miles  # type: ignore[operator]
        zero = distance == 0.0
        return {NUMERICAL: 0.0 if implausible else distance,
                IMPLAUSIBLE: 1.0 if implausible else 0.0, ZERO: 1.0 if zero else 0.0}

    def distance_columns(self, distance: np.ndarray) -> list[np.ndarray]:
        """:attr:`numeric` features of many rides at once (same values as :meth:`distance_features`)."""
        import numpy as np

        if self.name == COURSE:
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
    return {CATEGORICAL: f"{int(ride['PULocationID'])}_{int(ride['DOLocationID'])}",
            **step.distance_features(float(ride["trip_distance"]))}


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
