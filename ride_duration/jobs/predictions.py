"""The predictions ``evaluate`` judges: prediction-log directories and Kafka predictions topics, as one frame.

Sources (``--predictions``, repeatable):

* a prediction-log directory (``PREDICTION_LOG_DIR``: every ``predictions-<pid>.jsonl*`` file, rotated ones
  included) or one ``.jsonl`` file: served lines (``"role": "served"``, or no ``role`` in older logs) and
  shadow lines (``"role": "shadow"``, with ``served_model_version`` and ``served_prediction``);
* ``kafka://HOST:PORT[,HOST:PORT]/TOPIC``: the stream's predictions topic (``{"ride_id", "duration",
  "model_version"}``) or its shadow sink (``"role": "shadow"``, ``served_duration``,
  ``served_model_version``), read from the beginning to the end offsets at the start
  (:func:`ride_duration.stream.topic_reader.read_topic`). ``duration`` is the prediction.

One row per usable record: ``ride_id`` (text: ``42`` and ``"42"`` are one ride), ``role``,
``model_version``, ``prediction``, ``served_model_version``, ``trip_distance`` (when the record has
it), ``time`` (the log line's ``time``, the Kafka message's timestamp) and ``seq`` (reading order:
sources in the order given, a log's files oldest first, a topic's messages by partition and offset).
A shadow record also stands for the served prediction it carries (a served row is added for it), so
a ride is compared even when the prediction log's sampling missed its served line.

Duplicates (at-least-once delivery, a client's retry, a replayed log): **one prediction per
(ride_id, role, model_version), the latest** by ``time`` (a record without one counts as oldest),
then by ``seq``. A record without a usable ``model_version`` or ``prediction`` or with an unknown
``role`` is counted, not used; a record without a ride id cannot be joined and is counted.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from ..errors import BadInput
from . import sources

if t.TYPE_CHECKING:
    import pandas as pd

    from ..stream.endpoints import KafkaTopic

Source = t.Union[Path, "KafkaTopic"]
SERVED, SHADOW = sources.SERVED, "shadow"
LOG_KEYS = ("time", "ride_id", "role", "model_version", "prediction", "served_model_version", "served_prediction",
            "trip_distance")
KAFKA_KEYS = {"ride_id": "ride_id", "role": "role", "model_version": "model_version", "duration": "prediction",
              "served_model_version": "served_model_version", "served_duration": "served_prediction",
              "trip_distance": "trip_distance"}
"""A predictions topic's record key → the frame's column."""
KEY = ["ride_id", "role", "model_version"]


def as_text(values: pd.Series) -> pd.Series:
    """Ride ids (and version labels) as text: ``42`` and ``"42"`` are the same ride; ``<NA>`` where missing or empty."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def read(source: Source, group: str, timeout: float, kafka_config: t.Mapping[str, str] | None = None
         ) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    """The raw records of one source (columns of :data:`LOG_KEYS`) and what was read.

    :raises BadInput: a log path that does not exist or holds no record, a topic that does not exist.
    :raises JobError: the broker cannot be reached.
    """
    import pandas as pd

    if isinstance(source, Path):
        if not source.exists():
            raise BadInput(f"--predictions {source}: no such directory or file")
        records, info = sources.log_records(source, LOG_KEYS)
        frame = pd.DataFrame(records, columns=list(LOG_KEYS), dtype=object)
        frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
        info = {**info, "kind": "prediction_log"}
    else:
        frame, info = read_kafka(source, group, timeout, kafka_config)
    if frame.empty:
        raise BadInput(f"--predictions {source}: no prediction records"
                       + (f" in {info['files']} file(s)" if "files" in info else ""))
    return frame, {**info, "records": len(frame)}


def read_kafka(topic: KafkaTopic, group: str, timeout: float, kafka_config: t.Mapping[str, str] | None
               ) -> tuple[pd.DataFrame, dict[str, t.Any]]:
    import orjson
    import pandas as pd

    from ..stream.topic_reader import read_topic

    messages = read_topic(topic, group, timeout, kafka_config)
    records, bad = [], 0
    for message in messages:
        try:
            record = orjson.loads(message.value or b"")
            records.append({column: record.get(key) for key, column in KAFKA_KEYS.items()})
        except (orjson.JSONDecodeError, AttributeError):
            bad += 1
            records.append({})  # keeps the frame aligned with the timestamps; dropped as unusable
    frame = pd.DataFrame(records, columns=list(LOG_KEYS), dtype=object)
    stamps = pd.array([m.timestamp_ms for m in messages], dtype="Int64")
    frame["time"] = pd.to_datetime(pd.Series(stamps, dtype="Int64"), unit="ms", utc=True)
    return frame.loc[[bool(r) for r in records]].reset_index(drop=True), {
        "source": str(topic), "kind": "kafka", "messages": len(messages), "unreadable_lines": bad,
        "partitions": len({m.partition for m in messages})}


def normalise(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Typed, usable rows (with a ride id) and the counts of what was left out (module docstring)."""
    import numpy as np
    import pandas as pd

    frame = raw.copy()
    frame["role"] = frame["role"].fillna(SERVED)
    frame["prediction"] = pd.to_numeric(frame["prediction"], errors="coerce")
    frame["served_prediction"] = pd.to_numeric(frame["served_prediction"], errors="coerce")
    frame["trip_distance"] = pd.to_numeric(frame["trip_distance"], errors="coerce").astype(float)
    for column in ("model_version", "served_model_version"):
        frame[column] = as_text(frame[column])
    usable = frame["role"].isin([SERVED, SHADOW]) & frame["model_version"].notna()
    usable &= np.isfinite(frame["prediction"].to_numpy(dtype=float, na_value=np.nan))
    frame["ride_id"] = as_text(frame["ride_id"])
    with_id = usable & frame["ride_id"].notna()
    counts = {"records": len(frame), "unusable": int((~usable).sum()),
              "without_ride_id": int((usable & ~with_id).sum())}
    frame = frame.loc[with_id]
    counts["duplicates"] = int(frame.duplicated(KEY).sum())
    shadow = frame.loc[(frame["role"] == SHADOW) & frame["served_model_version"].notna()
                       & np.isfinite(frame["served_prediction"].to_numpy(dtype=float, na_value=np.nan))]
    carried = shadow.assign(role=SERVED, model_version=shadow["served_model_version"],
                            prediction=shadow["served_prediction"])
    frame = pd.concat([frame, carried], ignore_index=True) if len(carried) else frame
    frame["served_model_version"] = frame["served_model_version"].where(frame["role"] == SHADOW)
    return latest(frame.drop(columns="served_prediction")), counts


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (ride_id, role, model_version): the latest by ``time`` (none = oldest), then by ``seq``."""
    ordered = frame.sort_values(["time", "seq"], na_position="first", kind="stable")
    return ordered.drop_duplicates(KEY, keep="last").sort_values("seq", kind="stable").reset_index(drop=True)


def read_all(given: t.Sequence[Source], group: str, timeout: float,
             kafka_config: t.Mapping[str, str] | None = None) -> tuple[pd.DataFrame, list[dict[str, t.Any]], dict]:
    """Every source (log paths first, then topics: a bad path is refused before a broker is asked), normalised.

    :return: the frame, one info dict per source (in the order given), the counts of :func:`normalise`.
    :raises BadInput: a source cannot be read, or no record has a ride id (nothing can be joined).
    """
    import pandas as pd

    order = sorted(range(len(given)), key=lambda i: not isinstance(given[i], Path))
    read_frames: dict[int, tuple[pd.DataFrame, dict[str, t.Any]]] = {
        i: read(given[i], group, timeout, kafka_config) for i in order}
    frames, infos = [], []
    offset = 0
    for i in range(len(given)):
        frame, info = read_frames[i]
        frames.append(frame.assign(seq=range(offset, offset + len(frame))))
        offset += len(frame)
        infos.append(info)
    frame, counts = normalise(pd.concat(frames, ignore_index=True))
    if frame.empty:
        raise BadInput(f"--predictions {', '.join(map(str, given))}: no prediction record with a ride_id and a "
                       f"prediction ({counts['without_ride_id']} without a ride_id, {counts['unusable']} unusable)")
    return frame, infos, counts
