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
    return sorted(p for p in path.glob(LOG_PATTERN) if p.is_file()) if path.is_dir() else [path]


def read_log(path: Path) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    """Every readable record of the prediction log at ``path`` (a directory or one file)."""
    import orjson
    import pandas as pd

    records: list[dict[str, t.Any]] = []
    bad = shadow = 0
    files = log_files(path)
    for file in files:
        with open(file, "rb") as lines:
            for line in lines:
                try:
                    record = orjson.loads(line)
                    if record.get("role", "served") != "served":
                        shadow += 1  # a shadow model's prediction of a ride already logged as served
                        continue
                    records.append({key: record.get(key) for key in (*COLUMNS, "prediction", "model_version")})
                except (orjson.JSONDecodeError, AttributeError):
                    bad += 1  # a line cut by a crash mid-write, or not a record
    if not records:
        raise SourceError(f"{path}: no prediction log records in {len(files)} file(s)")
    frame = pd.DataFrame.from_records(records)
    for column in (*COLUMNS, "prediction"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["actual_duration"] = float("nan")
    versions = sorted(str(v) for v in frame["model_version"].dropna().unique())
    return frame.drop(columns="model_version"), {
        "source": str(path), "kind": "prediction_log", "files": len(files), "rows": len(frame),
        "unreadable_lines": bad, "shadow_lines": shadow, "model_versions": versions}
