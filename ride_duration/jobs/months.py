"""Which months ``retrain`` trains and validates on, and where their files are.

A month is ``YYYY-MM`` (or ``latest``: the newest month whose next month is available too, what a
schedule runs). Its file is read like ``train.py`` reads it: from ``TLC_DATA_DIR`` when there, else
downloaded from the TLC (unless ``TLC_DOWNLOAD=false``). A month that is not published (or not in
``TLC_DATA_DIR`` offline) is :class:`NoData` (exit 2: try later).
"""

from __future__ import annotations

import argparse
import datetime as dt
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

from ..config import Settings
from ..errors import BadInput
from . import data

if t.TYPE_CHECKING:
    import pandas as pd


class NoData(BadInput):
    """The month's file is not there (not yet published, or not in ``TLC_DATA_DIR`` offline)."""


LATEST = "latest"
LOOKBACK_MONTHS = 18
"""How far back ``--month latest`` looks for published months (the TLC publishes ~2 months late)."""


def month(text: str) -> str:
    """argparse type: ``YYYY-MM`` or ``latest``."""
    if text == LATEST:
        return text
    try:
        dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError("must be YYYY-MM") from None
    return text


def next_month(value: str) -> str:
    year, mon = map(int, value.split("-"))
    return f"{year + mon // 12}-{mon % 12 + 1:02d}"


def previous_month(value: str) -> str:
    year, mon = map(int, value.split("-"))
    return f"{year - (mon == 1)}-{(mon - 2) % 12 + 1:02d}"


def latest_month(settings: Settings, today: dt.date | None = None) -> str:
    """The newest month whose next month is available too (so it can be validated).

    Candidates: the months of the files in ``TLC_DATA_DIR`` and, when downloads are on, the
    last :data:`LOOKBACK_MONTHS` months at the TLC.

    :raises NoData: no such pair.
    """
    candidates = {p.stem.rsplit("_", 1)[-1] for p in Path(settings.tlc_data_dir).glob("green_tripdata_*.parquet")}
    if settings.tlc_download:
        current = (today or dt.date.today()).strftime("%Y-%m")
        for _ in range(LOOKBACK_MONTHS):
            current = previous_month(current)
            candidates.add(current)
    available: dict[str, bool] = {}

    def has(value: str) -> bool:
        if value not in available:
            try:
                source_for(value, settings)
                available[value] = True
            except NoData:
                available[value] = False
        return available[value]

    for candidate in sorted((c for c in candidates if len(c) == 7), reverse=True):
        if has(next_month(candidate)) and has(candidate):
            return candidate
    raise NoData(f"no month with its next month in {settings.tlc_data_dir}"
                 + (f" or at the TLC (last {LOOKBACK_MONTHS} months)" if settings.tlc_download else ""))


def source_for(value: str, settings: Settings) -> str:
    """The local file or the TLC URL for a month.

    :raises NoData: not local and downloads are off, or the TLC answers 403/404 (not published).
    """
    source = data.resolve_source(value, settings.tlc_data_dir)
    if not source.startswith(("http://", "https://")):
        return source
    if not settings.tlc_download:
        raise NoData(f"{value}: not in {settings.tlc_data_dir} and TLC_DOWNLOAD is false")
    try:
        with urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=30):  # noqa: S310 - http(s) only, checked above
            return source
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):  # CloudFront answers 403 for a file that does not exist
            raise NoData(f"{value}: {source} answered {exc.code} (not published yet?)") from exc
        raise


def read(source: str) -> pd.DataFrame:
    rides = data.read_rides(source)
    if rides.empty:
        raise NoData(f"{source}: no 1-60 minute rides")
    return rides
