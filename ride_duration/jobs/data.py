"""Reading NYC TLC green-taxi trip files into training frames (train/score only)."""

from __future__ import annotations

import typing as t
from pathlib import Path

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


def read_rides(source: str) -> pd.DataFrame:
    """Read a TLC parquet file (path or URL) and return the cleaned rides."""
    import pandas as pd

    frame = pd.read_parquet(resolve_source(source), columns=COLUMNS)
    return clean(frame)
