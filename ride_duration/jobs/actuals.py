"""The true durations ``evaluate`` joins predictions with (``--actuals``: parquet or CSV).

Two shapes, by their columns:

* ``ride_id`` and ``actual_duration`` (minutes): what a trip system reports when a ride ends;
* TLC rows: pickup and drop-off times (``lpep_pickup_datetime``/``lpep_dropoff_datetime``, or the yellow
  and FHV pairs ``score`` knows), duration = drop-off - pickup in minutes as training computes it; the
  ride id is the ``ride_id`` column when there is one, else the row's 0-based index in the file, as
  ``score`` numbers its output.

``trip_distance``, when present, is kept: it judges plausibility for rides whose prediction record has
no distance (the stream's predictions topic). Ride ids are compared as text (``42`` = ``"42"``); a
CSV's ride ids are read as written (``007`` stays ``007``). A ride id given twice keeps its last row
(counted as ``duplicate_ride_ids``); a row without a ride id is counted and left out.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from ..errors import BadInput
from .predictions import as_text
from .rows import TIMESTAMP_PAIRS

if t.TYPE_CHECKING:
    import pandas as pd

DURATION = "actual_duration"
OPTIONAL = ("ride_id", "trip_distance")


def is_csv(path: Path) -> bool:
    return ".csv" in path.suffixes


def columns_of(path: Path) -> list[str]:
    """The file's column names (a CSV's header line, a parquet file's schema)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if is_csv(path):
            return list(pd.read_csv(path, nrows=0).columns)
        return list(pq.read_schema(path).names)
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise BadInput(f"--actuals {path}: cannot read it as {'CSV' if is_csv(path) else 'parquet'}: {exc}") from None


def read(path: Path) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    """``ride_id`` (text), ``actual_duration`` (minutes) and ``trip_distance`` (NaN when absent), one row per ride.

    :raises BadInput: missing, unreadable or empty file, no usable columns, a column of the wrong type.
    """
    import pandas as pd
    import pyarrow as pa

    if not path.is_file():
        raise BadInput(f"--actuals {path}: no such file")
    names = columns_of(path)
    times = next((pair for pair in TIMESTAMP_PAIRS if set(pair) <= set(names)), None)
    if DURATION in names:
        if "ride_id" not in names:
            raise BadInput(f"--actuals {path}: has {DURATION} but no ride_id column")
        wanted, kind = [DURATION], "durations"
    elif times is not None:
        wanted, kind = list(times), "tlc"
    else:
        raise BadInput(f"--actuals {path}: needs ride_id and {DURATION} columns, or TLC pickup/drop-off times "
                       f"({', '.join(TIMESTAMP_PAIRS[0])})")
    wanted += [c for c in OPTIONAL if c in names]
    try:
        if is_csv(path):
            frame = pd.read_csv(path, usecols=wanted, dtype={"ride_id": "string"})
        else:
            frame = pd.read_parquet(path, columns=wanted)
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise BadInput(f"--actuals {path}: cannot read it: {exc}") from None
    if frame.empty:
        raise BadInput(f"--actuals {path}: no rows")
    minutes = duration(frame, times if kind == "tlc" else None, path)
    ids = ride_ids(frame["ride_id"], path) if "ride_id" in frame else as_text(pd.Series(range(len(frame))))
    distance = (pd.to_numeric(frame["trip_distance"], errors="coerce") if "trip_distance" in frame
                else pd.Series(float("nan"), index=frame.index))
    out = pd.DataFrame({"ride_id": ids.to_numpy(), DURATION: minutes.to_numpy(dtype=float),
                        "trip_distance": distance.to_numpy(dtype=float)})
    without_id = int(out["ride_id"].isna().sum())
    out = out.loc[out["ride_id"].notna()]
    duplicates = int(out["ride_id"].duplicated().sum())
    out = out.drop_duplicates("ride_id", keep="last").reset_index(drop=True)
    return out, {"path": str(path), "kind": kind, "rows": len(frame), "rows_without_ride_id": without_id,
                 "duplicate_ride_ids": duplicates}


def duration(frame: pd.DataFrame, times: tuple[str, str] | None, path: Path) -> pd.Series:
    """Minutes: the ``actual_duration`` column (a number), or drop-off - pickup (timestamps; a CSV's text parsed).

    :raises BadInput: naming the column and its type.
    """
    import pandas as pd
    from pandas.api import types

    if times is None:
        column = frame[DURATION]
        if not types.is_numeric_dtype(column) or types.is_bool_dtype(column):
            raise BadInput(f"--actuals {path}: column {DURATION} is {column.dtype}; expected minutes as numbers")
        return column.astype(float)
    stamps = []
    for name in times:
        column = frame[name]
        if not types.is_datetime64_any_dtype(column):
            if not is_csv(path):
                raise BadInput(f"--actuals {path}: column {name} is {column.dtype}; expected timestamps")
            try:
                column = pd.to_datetime(column, format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise BadInput(f"--actuals {path}: column {name} is not a timestamp: {exc}") from None
        stamps.append(column)
    return (stamps[1] - stamps[0]).dt.total_seconds() / 60.0


def ride_ids(column: pd.Series, path: Path) -> pd.Series:
    """Integer or text ride ids as text; a float column (ids of a file with nulls) only if every id is whole.

    :raises BadInput: any other type, or fractional ids.
    """
    import numpy as np
    from pandas.api import types

    if types.is_float_dtype(column):
        values = column.to_numpy(dtype=float, na_value=np.nan)
        known = values[~np.isnan(values)]
        if not np.all(np.mod(known, 1) == 0):
            raise BadInput(f"--actuals {path}: column ride_id is {column.dtype} with fractions; expected "
                           "integers or text")
        return as_text(column.astype("Int64"))
    if types.is_bool_dtype(column) or not (types.is_integer_dtype(column) or types.is_string_dtype(column)
                                           or types.is_object_dtype(column)):
        raise BadInput(f"--actuals {path}: column ride_id is {column.dtype}; expected integers or text")
    return as_text(column)
