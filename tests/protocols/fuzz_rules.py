"""The length rules JSON Schema cannot state, applied to schemathesis' schema-valid cases.

The OpenAPI document states everything else exactly (``ride_duration.protocols.request_schemas``)
and lists these rules in ``x-length-rules``; the service answers 400 when one is broken.
A generator that only reads JSON Schema cannot know that two lengths in one body must be
equal, so positive (schema-valid) cases get them made equal here, and nothing else changed;
negative cases are left alone. Used by ``tests/test_fuzz.py`` and, as a schemathesis hook,
by ``scripts/fuzz.sh`` (``SCHEMATHESIS_HOOKS=schemathesis_hooks``, ``scripts/schemathesis_hooks.py``).
"""

from __future__ import annotations

import copy
import typing as t

import schemathesis

from ride_duration.features import RAW_COLUMNS

JSON = "application/json"


RIDE_ID = "ride_id"


def _valid_cell(field: str, row: int) -> int | float | str:
    """A value of ``field`` for row ``row`` of a wide ``dataframe_split``, spread over the range."""
    if field == RIDE_ID:
        return f"ride-{row}"
    if field == "trip_distance":
        return round((row * 37.7) % 1000, 3)
    return 1 + (row * 37 + (field == "DOLocationID") * 11) % 999


def _v2(body: dict[str, t.Any]) -> None:
    """``shape[0]`` = number of values, one N for all tensors (the shortest one's; 1 with a
    ``parameters.ride_id``, which a ``ride_id`` tensor replaces)."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(
            isinstance(x, dict) and isinstance(x.get("data"), list) and x["data"]
            and isinstance(x.get("shape"), list) and x["shape"] for x in inputs) or not inputs:
        return
    n = min(len(x["data"]) for x in inputs)
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and RIDE_ID in parameters:
        if any(x.get("name") == RIDE_ID for x in inputs):
            del parameters[RIDE_ID]
        else:
            n = 1
    for x in inputs:
        x["data"] = x["data"][:n]
        x["shape"][0] = n


def _split(split: dict[str, t.Any]) -> None:
    """Rows one value per column (ride values valid, as the schema says), ``index`` one label per row."""
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not isinstance(data, list) or not data:
        return
    if len(columns) > len(RAW_COLUMNS) and all(isinstance(row, list) for row in data):
        for r, row in enumerate(data):
            cells = [row[i] if i < len(row) else None for i in range(len(columns))]
            for field in (*RAW_COLUMNS, RIDE_ID):
                if field in columns:
                    cells[columns.index(field)] = _valid_cell(field, r)
            data[r] = cells
    index = split.get("index")
    if isinstance(index, list) and index:
        split["index"] = (index * len(data))[:len(data)]


def _columns(columns: dict[str, t.Any]) -> None:
    """All columns as long as the shortest one."""
    if columns and all(isinstance(v, list) and v for v in columns.values()):
        n = min(len(v) for v in columns.values())
        for name, values in columns.items():
            columns[name] = values[:n]


def apply_length_rules(path: str, media_type: str | None, body: t.Any) -> t.Any:
    """A schema-valid body with the length rules of ``x-length-rules`` made true (a copy)."""
    if media_type != JSON or not isinstance(body, dict):
        return body
    body = copy.deepcopy(body)
    if path.endswith("/infer"):
        _v2(body)
    elif path == "/invocations":
        if isinstance(body.get("dataframe_split"), dict):
            _split(body["dataframe_split"])
        for key in ("instances", "inputs"):
            if isinstance(body.get(key), dict):
                _columns(body[key])
    return body


def apply_to_case(case: t.Any) -> t.Any:
    """Positive cases only: a negative case stays as invalid as it was drawn."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and case.body is not None:
        case.body = apply_length_rules(case.operation.path, case.media_type, case.body)
    return case


def register_hook() -> None:
    """For schemathesis' CLI (``scripts/schemathesis_hooks.py``): the rules as a ``map_case`` hook."""

    @schemathesis.hook
    def map_case(context: t.Any, case: t.Any) -> t.Any:  # noqa: ARG001 - schemathesis' hook signature
        return apply_to_case(case)
