"""The one feature step, shared by training, serving and batch scoring.

A ride becomes ``{"PU_DO": "<PU>_<DO>", "trip_distance": <miles>}``; a
``DictVectorizer`` one-hot encodes ``PU_DO`` and passes ``trip_distance`` through.
"""

from __future__ import annotations

import typing as t

RAW_COLUMNS: tuple[str, ...] = ("PULocationID", "DOLocationID", "trip_distance")
"""The ride fields the model reads; everything else in a record is ignored."""

CATEGORICAL = "PU_DO"
NUMERICAL = "trip_distance"


def ride_features(ride: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Turn one ride into the dictionary the ``DictVectorizer`` expects."""
    return {
        CATEGORICAL: f"{int(ride['PULocationID'])}_{int(ride['DOLocationID'])}",
        NUMERICAL: float(ride["trip_distance"]),
    }


def prepare_features(rides: t.Iterable[t.Mapping[str, t.Any]]) -> list[dict[str, t.Any]]:
    """Feature dictionaries for many rides, in input order."""
    return [ride_features(ride) for ride in rides]


def frame_to_rides(frame: t.Any) -> list[dict[str, t.Any]]:
    """Rides from a pandas ``DataFrame`` (or anything with ``to_dict("records")``).

    Used by the MLflow-logged pipeline, whose pyfunc flavour hands it a frame.
    """
    if hasattr(frame, "to_dict"):
        return frame[list(RAW_COLUMNS)].to_dict("records")
    return list(frame)


def rides_to_features(rides: t.Any) -> list[dict[str, t.Any]]:
    """``FunctionTransformer`` target: a frame or a list of rides to feature dicts."""
    return prepare_features(frame_to_rides(rides))
