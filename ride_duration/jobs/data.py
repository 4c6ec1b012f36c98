"""Reading NYC TLC green-taxi trip files into training frames (train/score only).

Where a month ``YYYY-MM`` is read from has one answer, :func:`resolve_source`: the folder given
(``--data-dir``, default the ``TLC_DATA_DIR`` setting, ``ride_duration.jobs.cli.data_dir``) when
the file is there, else the TLC's public URL.
"""

from __future__ import annotations

import typing as t
import urllib.error
from pathlib import Path

from ..errors import BadInput, JobError

if t.TYPE_CHECKING:
    import pandas as pd

TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_{month}.parquet"
"""The TLC's public URL pattern; ``month`` is ``YYYY-MM``."""

MIN_MINUTES = 1.0
MAX_MINUTES = 60.0
COLUMNS = ["lpep_pickup_datetime", "lpep_dropoff_datetime", "PULocationID", "DOLocationID", "trip_distance"]


def resolve_source(source: str, data_dir: str | Path | None = None) -> str:
    """Accept a path, a URL, or a bare ``YYYY-MM`` month.

    A month is read from ``data_dir`` when the file is there, else from the TLC's public URL.
    """
    if len(source) == 7 and source[4] == "-" and source.replace("-", "").isdigit():
        local = Path(data_dir) / f"green_tripdata_{source}.parquet" if data_dir else None
        return str(local) if local is not None and local.is_file() else TLC_URL.format(month=source)
    return source


def add_duration(frame: pd.DataFrame) -> pd.DataFrame:
    """Duration in minutes from the pickup and drop-off timestamps."""
    delta = frame["lpep_dropoff_datetime"] - frame["lpep_pickup_datetime"]
    return frame.assign(duration=delta.dt.total_seconds() / 60.0)


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep rides of 1–60 minutes with both zones known, as the course does."""
    frame = add_duration(frame)
    keep = frame["duration"].between(MIN_MINUTES, MAX_MINUTES)
    keep &= frame["PULocationID"].notna() & frame["DOLocationID"].notna()
    frame = frame.loc[keep].copy()
    frame["trip_distance"] = frame["trip_distance"].fillna(0.0)
    frame["PULocationID"] = frame["PULocationID"].astype("int64")
    frame["DOLocationID"] = frame["DOLocationID"].astype("int64")
    return frame.reset_index(drop=True)


def check_columns(frame: pd.DataFrame, source: str) -> None:
    """The columns training needs have the types it needs.

    :raises BadInput: naming the file, the column and its type.
    """
    from pandas.api import types

    wrong = [f"{c} is {frame[c].dtype}" for c in COLUMNS[:2] if not types.is_datetime64_any_dtype(frame[c])]
    wrong += [f"{c} is {frame[c].dtype}" for c in COLUMNS[2:] if not types.is_numeric_dtype(frame[c])]
    if wrong:
        raise BadInput(f"{source}: column {', '.join(wrong)}; expected timestamps for the pickup/drop-off times "
                       "and numbers for the zones and trip_distance")


def read_rides(source: str) -> pd.DataFrame:
    """Read a TLC parquet file (path or URL, see :func:`resolve_source`) and return the cleaned rides.

    :raises BadInput: missing, unreadable or corrupt, a column missing or of the wrong type, an HTTP
        error answer for a URL, or no 1-60 minute rides (exit 2: the same run fails the same way).
    :raises JobError: a URL that cannot be reached (exit 1: a retry may help).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if Path(source).is_file():
            missing = [c for c in COLUMNS if c not in pq.read_schema(source).names]
            if missing:
                raise BadInput(f"{source} lacks required column(s): {', '.join(missing)}")
        frame = pd.read_parquet(source, columns=COLUMNS)
    except urllib.error.HTTPError as exc:
        raise BadInput(f"cannot download {source}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise JobError(f"cannot download {source}: {exc.reason}") from None
    except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
        raise BadInput(f"cannot read {source}: {exc}") from None
    check_columns(frame, source)
    rides = clean(frame)
    if rides.empty:
        raise BadInput(f"{source}: no 1-60 minute rides with both zones")
    return rides
