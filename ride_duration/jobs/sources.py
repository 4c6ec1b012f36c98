"""What ``monitor`` compares: a TLC month scored by the score job, or the service's prediction log.

Both become one frame: ``PULocationID``, ``DOLocationID``, ``trip_distance`` as read,
``prediction`` (minutes; null when the row cannot be scored) and ``actual_duration`` (minutes;
null without timestamps, and always null in a prediction log).

* A parquet path, URL or ``YYYY-MM`` (local in ``--data-dir``/``TLC_DATA_DIR`` else the TLC's URL) is scored
  with :func:`ride_duration.jobs.score.score_file`, the ``score`` CLI's own code, so the
  monitor's RMSE is the score CLI's on the same rides.
* A directory or a ``.jsonl`` file is the prediction log (``PREDICTION_LOG_DIR``; every
  ``*.jsonl*`` file in it, rotated ones included); its predictions are the ones served: only the
  lines whose ``role`` is ``served`` (or absent, older logs) are read, never the shadow model's.
  :func:`log_records` reads it for ``evaluate`` too.
"""

from __future__ import annotations

import shutil
import tempfile
import typing as t
import urllib.request
from pathlib import Path

from ..errors import BadInput
from . import data, score

if t.TYPE_CHECKING:
    import pandas as pd

    from ..model.predictor import LoadedModel

COLUMNS = ("PULocationID", "DOLocationID", "trip_distance")
LOG_PATTERN = "*.jsonl*"
SERVED = "served"
"""The prediction log's ``role`` of an answered prediction (a line without ``role``, from older logs, is one too)."""


class SourceError(BadInput):
    """The source cannot be read (missing file, no rows, not parquet or JSON lines): exit 2."""


def is_log(source: str) -> bool:
    path = Path(source)
    return path.is_dir() or (path.is_file() and ".jsonl" in path.name)


def load(source: str, model: LoadedModel, data_dir: Path | None) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    """The frame and a description of where it came from.

    :raises SourceError: unreadable, absent, or empty.
    """
    if is_log(source):
        return read_log(Path(source))
    return score_month(source, model, data_dir)


def score_month(source: str, model: LoadedModel, data_dir: Path | None) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    import pandas as pd

    resolved = data.resolve_source(source, data_dir)
    with tempfile.TemporaryDirectory(prefix="monitor-") as tmp:
        path = Path(resolved)
        if resolved.startswith(("http://", "https://")):
            path = Path(tmp) / resolved.rsplit("/", 1)[-1]
            try:
                with urllib.request.urlopen(resolved, timeout=60) as response, open(path, "wb") as out:  # noqa: S310 - http(s) only, checked above
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                raise SourceError(f"cannot download {resolved}: {exc}") from exc
        elif not path.is_file():
            raise SourceError(f"{source}: no such file ({resolved})")
        output = Path(tmp) / "scored.parquet"
        try:
            counts = score.score_file(path, output, model)
        except score.InputError as exc:
            raise SourceError(str(exc)) from None
        frame = pd.read_parquet(output, columns=[*COLUMNS, "actual_duration", "predicted_duration"])
    if frame.empty:
        raise SourceError(f"{source}: no rows")
    frame = frame.rename(columns={"predicted_duration": "prediction"})
    return frame, {"source": resolved, "kind": "parquet", "rows": counts["rows"], "scored": counts["scored"],
                   "model_version": model.version}


def log_files(path: Path) -> list[Path]:
    """The log's files, oldest first: per worker file set the rotated ``.N`` (oldest) .. ``.1``, then the live file.

    :raises SourceError: ``path`` is neither a directory nor a file.
    """
    if path.is_dir():
        return sorted((p for p in path.glob(LOG_PATTERN) if p.is_file()), key=rotation_order)
    if path.is_file():
        return [path]
    raise SourceError(f"{path}: no such directory or file")


def rotation_order(path: Path) -> tuple[str, int]:
    """``predictions-7.jsonl.2`` → ``("predictions-7.jsonl", -2)``: sorts a file set oldest first."""
    base, _, number = path.name.rpartition(".")
    return (base, -int(number)) if base and number.isdigit() else (path.name, 0)


def log_records(path: Path, keys: t.Sequence[str]) -> tuple[list[dict[str, t.Any]], dict[str, t.Any]]:
    """``keys`` of every record of the prediction log at ``path`` (a directory or one file), in reading order
    (:func:`log_files`), and ``{"source", "files", "unreadable_lines"}``. A line cut by a crash mid-write, or
    that is not a JSON object, is counted, not fatal.

    :raises SourceError: ``path`` does not exist.
    """
    import orjson

    records: list[dict[str, t.Any]] = []
    bad = 0
    files = log_files(path)
    for file in files:
        with open(file, "rb") as lines:
            for line in lines:
                try:
                    record = orjson.loads(line)
                    records.append({key: record.get(key) for key in keys})
                except (orjson.JSONDecodeError, AttributeError):
                    bad += 1
    return records, {"source": str(path), "files": len(files), "unreadable_lines": bad}


def read_log(path: Path) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    """The served records of the prediction log at ``path`` (shadow lines are another model's: left out)."""
    import pandas as pd

    records, info = log_records(path, (*COLUMNS, "prediction", "model_version", "role"))
    if not records:
        raise SourceError(f"{path}: no prediction log records in {info['files']} file(s)")
    frame = pd.DataFrame.from_records(records)
    served = frame["role"].isna() | (frame["role"] == SERVED)
    frame = frame.loc[served].drop(columns="role")
    if frame.empty:
        raise SourceError(f"{path}: no served prediction log records in {info['files']} file(s)")
    for column in (*COLUMNS, "prediction"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["actual_duration"] = float("nan")
    versions = sorted(str(v) for v in frame["model_version"].dropna().unique())
    return frame.drop(columns="model_version"), {
        **info, "kind": "prediction_log", "rows": len(frame), "shadow_lines": int((~served).sum()),
        "model_versions": versions}
