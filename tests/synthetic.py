"""Synthetic TLC-shaped green-taxi data, so a fresh clone tests without ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def tlc_data_dir() -> Path:
    """Where the real TLC files are: ``TLC_DATA_DIR``, default ``../shared/data`` beside the repo."""
    return Path(os.environ.get("TLC_DATA_DIR", ROOT.parent / "shared" / "data"))


def real_month(month: str) -> Path | None:
    """The real file for ``YYYY-MM`` if present, else None."""
    path = tlc_data_dir() / f"green_tripdata_{month}.parquet"
    return path if path.is_file() else None


def make_rides(n: int, seed: int = 0, zones: int = 30, month: str = "2021-01", slope: float = 2.5):
    """A DataFrame with the TLC columns the pipeline reads (plus a few it ignores).

    Duration ≈ 3 + ``slope``·distance + a per-zone-pair effect + noise; ~3 % of rows fall
    outside 1–60 minutes so the cleaning step has work to do.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    pu = rng.integers(1, zones + 1, n)
    do = rng.integers(1, zones + 1, n)
    dist = np.round(rng.gamma(2.0, 1.5, n), 2)
    effect = ((pu * 7 + do * 13) % 11) - 5.0
    minutes = 3.0 + slope * dist + effect + rng.normal(0, 2.0, n)
    outliers = rng.random(n) < 0.03
    minutes = np.where(outliers, rng.choice([0.2, 90.0, 300.0], n), minutes)
    start = pd.Timestamp(f"{month}-01") + pd.to_timedelta(rng.integers(0, 27 * 86400, n), unit="s")
    return pd.DataFrame({
        "VendorID": rng.integers(1, 3, n),
        "lpep_pickup_datetime": start,
        "lpep_dropoff_datetime": start + pd.to_timedelta(np.maximum(minutes, 0.0) * 60.0, unit="s"),
        "store_and_fwd_flag": "N",
        "RatecodeID": 1.0,
        "PULocationID": pu.astype("int64"),
        "DOLocationID": do.astype("int64"),
        "passenger_count": 1.0,
        "trip_distance": dist,
        "fare_amount": 2.5 + 2.5 * dist,
    })


def write_month(path: Path, n: int = 5000, seed: int = 0, **kwargs) -> Path:
    """Write a synthetic month as parquet and return its path."""
    make_rides(n, seed=seed, **kwargs).to_parquet(path, index=False)
    return path


def two_worlds(base: Path, n: int, seed: int) -> Path:
    """Four months in ``base``: 2030-0x, the old world (30 zones, 2.5 min per mile), and 2031-0x, other
    zones and slower traffic (45 zones, 4 min per mile): a model trained on one loses on the other."""
    for i, (month, zones, slope) in enumerate((("2030-01", 30, 2.5), ("2030-02", 30, 2.5),
                                               ("2031-01", 45, 4.0), ("2031-02", 45, 4.0))):
        write_month(base / f"green_tripdata_{month}.parquet", n=n, seed=seed + i, month=month, zones=zones,
                    slope=slope)
    return base
