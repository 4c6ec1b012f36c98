"""Request validation: what a ride is, and how violations are reported.

Decisions (documented in the README):

* Zone IDs are integers from 1 to 999 (TLC zones are 1–265; the head-room keeps new
  zones working). Integral floats such as ``10.0`` are accepted, as JSON Schema's
  ``integer`` allows; ``10.5``, booleans, strings and ``null`` are not.
* ``trip_distance`` is a finite JSON number (integer or float) from 0 to 1000 miles;
  booleans and strings are not numbers.
* ``ride_id`` is optional (required in stream messages): a non-empty string of at most 64
  characters, or an integer (not a boolean) within int64; integral floats such as ``17.0`` are read
  as the integer, as for zones. One rule for every entry point (:data:`RideId`).
* Other fields (a full TLC record) are ignored.
"""

from __future__ import annotations

import typing as t
from typing import NotRequired

from pydantic import ConfigDict, Field, PlainValidator, Strict, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from .errors import InvalidInput, PayloadTooLarge

MIN_ZONE, MAX_ZONE = 1, 999
MAX_TRIP_DISTANCE = 1000.0
MAX_REPORTED_ERRORS = 20

ZONE_PROBLEM = f"must be an integer zone ID from {MIN_ZONE} to {MAX_ZONE}"
_ZONE_SCHEMA = {"type": "integer", "minimum": MIN_ZONE, "maximum": MAX_ZONE,
                "description": "TLC taxi zone ID (integral floats such as 10.0 are accepted)"}

_StrictZone = t.Annotated[int, Strict(), Field(ge=MIN_ZONE, le=MAX_ZONE)]
_IntegralFloatZone = t.Annotated[float, Strict(), Field(ge=MIN_ZONE, le=MAX_ZONE, multiple_of=1)]
ZoneID = t.Annotated[
    _StrictZone | _IntegralFloatZone,
    Field(union_mode="left_to_right"),
    WithJsonSchema(_ZONE_SCHEMA),
]
TripDistance = t.Annotated[
    float,
    Strict(),
    Field(ge=0, le=MAX_TRIP_DISTANCE, allow_inf_nan=False, description="Trip distance in miles"),
]

MAX_RIDE_ID_LENGTH = 64
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
RIDE_ID_PROBLEM = (f"must be a non-empty string of at most {MAX_RIDE_ID_LENGTH} characters, "
                   "or an integer within int64")
RIDE_ID_SCHEMA: dict[str, t.Any] = {
    "anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_RIDE_ID_LENGTH},
              {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}],
    "description": "Optional caller's ride id, echoed in the answer and recorded in the prediction log"}


def ride_id_problem(value: t.Any) -> str | None:
    """Why ``value`` is not a ride id, or None. The value itself is never part of the problem."""
    if isinstance(value, str):
        return None if 0 < len(value) <= MAX_RIDE_ID_LENGTH else RIDE_ID_PROBLEM
    if isinstance(value, bool):
        return RIDE_ID_PROBLEM
    if isinstance(value, int):
        return None if INT64_MIN <= value <= INT64_MAX else RIDE_ID_PROBLEM
    if isinstance(value, float) and value.is_integer() and INT64_MIN <= value < 2.0 ** 63:
        return None
    return RIDE_ID_PROBLEM


def check_ride_id(value: t.Any) -> str | int:
    """The ride id (``17.0`` → ``17``). :raises PydanticCustomError: not a ride id (never echoing it)."""
    problem = ride_id_problem(value)
    if problem is not None:
        raise PydanticCustomError("ride_id", problem)
    return int(value) if isinstance(value, float) else value


RideId = t.Annotated[t.Any, PlainValidator(check_ride_id), WithJsonSchema(RIDE_ID_SCHEMA)]
"""The one ride-id rule: ``/predict``, ``/invocations``, V2, the stream and the Lambda."""


class Ride(TypedDict):
    """One NYC green-taxi ride; extra fields are ignored."""

    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    PULocationID: ZoneID
    DOLocationID: ZoneID
    trip_distance: TripDistance
    ride_id: NotRequired[RideId]


RIDE = TypeAdapter(Ride)
RIDES = TypeAdapter(list[Ride])


def field_path(loc: tuple[t.Any, ...], prefix: str = "") -> str:
    """``(3, 'trip_distance')`` → ``"[3].trip_distance"``; union branch tags dropped."""
    path = prefix
    for part in loc:
        if part in ("constrained-int", "constrained-float"):
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def describe(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """One ``{"field", "problem"}`` per bad field: never the offending value."""
    details: dict[str, str] = {}
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = err["loc"]
        path = field_path(loc, prefix)
        if path in details:
            continue
        zone = any(part in ("constrained-int", "constrained-float") for part in loc)
        if err["type"] == "missing":
            problem = "field required"
        elif zone:
            problem = ZONE_PROBLEM
        else:
            problem = err["msg"][0].lower() + err["msg"][1:]
        details[path] = problem
    return [{"field": f, "problem": p} for f, p in details.items()]


def invalid(exc: ValidationError, prefix: str = "") -> InvalidInput:
    details = describe(exc, prefix)
    shown = details[:MAX_REPORTED_ERRORS]
    more = len(details) - len(shown)
    message = f"{len(details)} invalid field(s)" + (f"; first {len(shown)} listed" if more else "")
    return InvalidInput(message, shown)


def validate_rides(payload: t.Any, max_batch: int) -> tuple[list[Ride], bool]:
    """Validate one ride (object) or a batch (array).

    :return: the rides and whether the request was a batch.
    :raises InvalidInput: wrong shape or bad fields (422).
    :raises PayloadTooLarge: more than ``max_batch`` rides (413).
    """
    if isinstance(payload, dict):
        try:
            return [RIDE.validate_python(payload)], False
        except ValidationError as exc:
            raise invalid(exc) from None
    if isinstance(payload, list):
        if not payload:
            raise InvalidInput("empty batch: send at least one ride",
                               [{"field": "body", "problem": "array must contain at least 1 ride"}])
        if len(payload) > max_batch:
            raise PayloadTooLarge(f"batch of {len(payload)} rides exceeds the limit of {max_batch}")
        try:
            return RIDES.validate_python(payload), True
        except ValidationError as exc:
            raise invalid(exc) from None
    raise InvalidInput("body must be a ride object or an array of rides",
                       [{"field": "body", "problem": "must be an object or an array"}])
