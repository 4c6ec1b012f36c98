"""Data-quality rules and model quality for a month of rides (the ``monitor`` job).

Every rule has a value, a threshold and a verdict, so a report says what was measured and
what it was compared with:

``missing_<column>``
    share of rows with the zone or distance missing; fails above 1 %.
``outside_api_limits``
    share of rows ``POST /predict`` would refuse (zone outside 1-999, ``trip_distance``
    outside 0-1000 miles; the limits of :mod:`ride_duration.schemas`); fails above 0.1 %.
``implausible_speed``
    (rides with durations) share of 1-60 minute rides whose distance over duration is above
    80 mph, which no NYC taxi ride averages (city limit 25 mph); fails above 0.1 %.
``mean_trip_distance``
    mean ``trip_distance`` of the analysed rides in miles; fails above 30: a 60-minute ride at
    the 25 mph city limit covers 25 miles, so a higher mean among rides of at most an hour is
    not real data (2022-02: 98 miles, from a few 10^5-mile records).

Model quality is measured on the rides training validates on: ``duration`` 1-60 minutes
(:data:`ride_duration.jobs.data.MIN_MINUTES` .. ``MAX_MINUTES``), scored. ``bias`` is
mean(predicted - actual): negative means the model predicts too short.
"""

from __future__ import annotations

import typing as t

import numpy as np

from ..features import MAX_PLAUSIBLE_MPH, plausible
from ..schemas import MAX_TRIP_DISTANCE, MAX_ZONE, MIN_ZONE
from . import data

if t.TYPE_CHECKING:
    import pandas as pd

MAX_MISSING_SHARE = 0.01
MAX_OUTSIDE_API_SHARE = 0.001
MAX_IMPLAUSIBLE_SHARE = 0.001
MAX_MEAN_TRIP_DISTANCE = 30.0
ZONES = ("PULocationID", "DOLocationID")
DISTANCE = "trip_distance"


def rule(name: str, value: float, threshold: float, description: str, **extra: t.Any) -> dict[str, t.Any]:
    """One rule's outcome: fails when ``value`` is above ``threshold``."""
    value = float(value)
    return {"name": name, "value": value, "threshold": threshold, "failed": bool(value > threshold),
            "description": description, **extra}


def with_duration(frame: pd.DataFrame) -> bool:
    return "actual_duration" in frame and bool(frame["actual_duration"].notna().any())


def analysed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rides drift and quality are judged on: scored, and 1-60 minutes when durations are known."""
    keep = frame["prediction"].notna()
    if with_duration(frame):
        keep &= frame["actual_duration"].between(data.MIN_MINUTES, data.MAX_MINUTES)
    return frame.loc[keep]


def data_quality(frame: pd.DataFrame, rides: pd.DataFrame) -> dict[str, t.Any]:
    """Rules over all rows read (``frame``) and the analysed rides (``rides``)."""
    n = max(len(frame), 1)
    rules = []
    for column in (*ZONES, DISTANCE):
        missing = int(frame[column].isna().sum())
        rules.append(rule(f"missing_{column}", missing / n, MAX_MISSING_SHARE,
                          f"share of rows without {column}", column=column, rows=missing))
    zones_out = np.zeros(len(frame), dtype=bool)
    for column in ZONES:
        values = frame[column]
        zones_out |= (values.notna() & ~values.between(MIN_ZONE, MAX_ZONE)).to_numpy()
    distance = frame[DISTANCE]
    distance_out = (distance.notna() & ~distance.between(0.0, MAX_TRIP_DISTANCE)).to_numpy()
    outside = int((zones_out | distance_out).sum())
    rules.append(rule("outside_api_limits", outside / n, MAX_OUTSIDE_API_SHARE,
                      f"share of rows POST /predict refuses (zone outside {MIN_ZONE}-{MAX_ZONE}, trip_distance "
                      f"outside 0-{MAX_TRIP_DISTANCE:g} miles)", rows=outside,
                      zone_rows=int(zones_out.sum()), distance_rows=int(distance_out.sum())))
    if with_duration(rides) and len(rides):
        mph = rides[DISTANCE] / (rides["actual_duration"] / 60.0)
        fast = int((mph > MAX_PLAUSIBLE_MPH).sum())
        rules.append(rule("implausible_speed", fast / len(rides), MAX_IMPLAUSIBLE_SHARE,
                          f"share of 1-60 minute rides averaging above {MAX_PLAUSIBLE_MPH:g} mph", rows=fast))
    if len(rides):
        rules.append(rule("mean_trip_distance", rides[DISTANCE].mean(), MAX_MEAN_TRIP_DISTANCE,
                          "mean trip_distance (miles) of the analysed rides",
                          median=float(rides[DISTANCE].median()), max=float(rides[DISTANCE].max())))
    return {"passed": not any(r["failed"] for r in rules), "rows": len(frame), "rules": rules}


def model_quality(rides: pd.DataFrame) -> dict[str, t.Any] | None:
    """RMSE, MAE, bias and n on the analysed rides, and the RMSE on the plausible ones
    (``features.plausible``: the metric the gate promotes on); None without actual durations."""
    if not with_duration(rides) or not len(rides):
        return None
    error = rides["prediction"].to_numpy(dtype=float) - rides["actual_duration"].to_numpy(dtype=float)
    keep = plausible(rides[DISTANCE].to_numpy(dtype=float), rides["actual_duration"].to_numpy(dtype=float))
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))),
            "bias": float(np.mean(error)), "n": int(len(error)),
            "rmse_plausible": float(np.sqrt(np.mean(error[keep] ** 2))) if keep.any() else None,
            "n_plausible": int(keep.sum())}
