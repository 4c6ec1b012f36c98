"""What a scoring engine reads from a TLC row, and which rows it can score (shared by both engines).

``check_row`` decides, per row, whether it is scored and the output's ``reason``; the local
engine (:mod:`.score`) calls it per chunk, the Spark engine (:mod:`.score_spark`) in a pandas UDF.
"""

from __future__ import annotations

import math
import typing as t

from ..errors import BadInput
from ..schemas import MAX_TRIP_DISTANCE, MAX_ZONE, MIN_ZONE

INPUTS = ("PULocationID", "DOLocationID", "trip_distance")
TIMESTAMP_PAIRS = (("lpep_pickup_datetime", "lpep_dropoff_datetime"),  # green
                   ("tpep_pickup_datetime", "tpep_dropoff_datetime"),  # yellow
                   ("pickup_datetime", "dropOff_datetime"))            # FHV
ID_COLUMNS = ("VendorID",)


NUMERIC_TYPES = ("int", "uint", "bigint", "smallint", "tinyint", "long", "short", "byte", "halffloat", "float",
                 "double", "decimal", "null", "void")
"""How pyarrow (``int64``, ``double``, ``null``…) and Spark (``bigint``, ``double``, ``void``…) name the
types a model input column may have: the type's name starts with one of these."""


class InputError(BadInput):
    """The input file cannot be scored at all (unreadable, a required column missing or not numeric): exit 2."""


def zone_problem(name: str, value: t.Any) -> tuple[int | None, str | None, str | None]:
    """(zone, reason it cannot be scored, note that the API would refuse it)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None, f"missing {name}", None
    if isinstance(value, float):
        if not value.is_integer():
            return None, f"{name} is not an integer", None
        value = int(value)
    if not MIN_ZONE <= value <= MAX_ZONE:
        return value, None, f"{name} outside the API range {MIN_ZONE}-{MAX_ZONE}; scored anyway"
    return value, None, None


def check_row(pu: t.Any, do: t.Any, dist: t.Any) -> tuple[dict[str, t.Any] | None, str | None]:
    """The ride to predict (or None) and the row's ``reason`` (or None)."""
    pu, pu_bad, pu_note = zone_problem("PULocationID", pu)
    do, do_bad, do_note = zone_problem("DOLocationID", do)
    if pu_bad or do_bad:
        return None, pu_bad or do_bad
    if dist is None or (isinstance(dist, float) and math.isnan(dist)):
        return None, "missing trip_distance"
    dist = float(dist)
    if not math.isfinite(dist) or dist < 0:
        return None, "trip_distance is negative or not finite"
    note = pu_note or do_note
    if dist > MAX_TRIP_DISTANCE and note is None:
        note = f"trip_distance above the API limit of {MAX_TRIP_DISTANCE:g} miles; scored anyway"
    return {"PULocationID": pu, "DOLocationID": do, "trip_distance": dist}, note


def plan_columns(names: t.Iterable[str], types: t.Mapping[str, str] | None = None,
                 source: t.Any = "input") -> tuple[list[str], tuple[str, str] | None]:
    """Input columns to read (identity + inputs) and the timestamp pair, if any, given the file's columns.

    ``types`` (column → the engine's type name) checks that the model inputs are numbers.

    :raises InputError: a model input column is absent or not numeric (``source`` names the file).
    """
    names = set(names)
    missing = [c for c in INPUTS if c not in names]
    if missing:
        raise InputError(f"{source} lacks required column(s): {', '.join(missing)}")
    wrong = [f"{c} is {types[c]}" for c in INPUTS if types is not None and not types[c].startswith(NUMERIC_TYPES)]
    if wrong:
        raise InputError(f"{source}: column {', '.join(wrong)}; a model input must be a number")
    times = next((pair for pair in TIMESTAMP_PAIRS if set(pair) <= names), None)
    read = [c for c in ID_COLUMNS if c in names] + list(times or ()) + list(INPUTS)
    return read, times
