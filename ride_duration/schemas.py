"""Request validation: what a ride is, and how violations are reported.

Decisions (documented in the README):

* Zone IDs are integers from 1 to 999 (TLC zones are 1–265; the head-room keeps new
  zones working). Integral floats such as ``10.0`` are accepted, as JSON Schema's
  ``integer`` allows; ``10.5``, booleans, strings and ``null`` are not.
* ``trip_distance`` is a finite JSON number (integer or float) from 0 to 1000 miles;
  booleans and strings are not numbers.
* Fields other than these three (a full TLC record) are ignored.
"""

from __future__ import annotations

import typing as t

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, WithJsonSchema
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


class Ride(TypedDict):
    """One NYC green-taxi ride; extra fields are ignored."""

    __pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[misc]

    PULocationID: ZoneID
    DOLocationID: ZoneID
    trip_distance: TripDistance


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
