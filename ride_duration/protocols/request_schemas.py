"""Exact JSON Schemas of the MLflow and V2 request bodies, for the OpenAPI document.

Exact means: a body the schema allows is answered 2xx, a body it refuses gets a 4xx
(``tests/test_fuzz.py`` checks both directions with schemathesis). Per-datatype value
ranges, the three tensors, ``[N]``/``[N, 1]`` shapes, the batch limit, unique column names
and the ride fields' types are stated with ``const``/``enum``/``oneOf``/``prefixItems``.

What JSON Schema cannot say is the equality of two lengths inside one body. Those rules are
stated in each schema's ``description`` and listed in ``x-length-rules`` (machine-readable,
used by the fuzz test's generator), and the service answers 400 when they are broken:

* V2: every tensor's ``shape[0]`` equals its number of values, and all tensors have
  the same N; ``parameters.ride_id`` only with N = 1 and no ``ride_id`` tensor;
* ``dataframe_split``: every row has one value per column, ``index`` (if given) one label per
  row; with columns beyond the three ride fields the row values line up with ``columns``;
* ``inputs``/``instances`` as columns: all columns have the same length.
"""

from __future__ import annotations

import itertools
import typing as t

from ..features import RAW_COLUMNS
from ..schemas import MAX_RIDE_ID_LENGTH, MAX_TRIP_DISTANCE, MAX_ZONE, MIN_ZONE, RIDE_ID_SCHEMA
from . import v2

Schema = dict[str, t.Any]


def zone(low: int = MIN_ZONE, high: int = MAX_ZONE) -> Schema:
    return {"type": "integer", "minimum": max(low, MIN_ZONE), "maximum": min(high, MAX_ZONE)}


DISTANCE: Schema = {"type": "number", "minimum": 0, "maximum": MAX_TRIP_DISTANCE}
FIELD = {"PULocationID": zone(), "DOLocationID": zone(), "trip_distance": DISTANCE}
RIDE_ID = {k: v for k, v in RIDE_ID_SCHEMA.items() if k != "description"}
NULLABLE_OBJECT: Schema = {"anyOf": [{"type": "object"}, {"type": "null"}]}
V2_PARAMETERS: Schema = {"anyOf": [{"type": "object", "properties": {"ride_id": RIDE_ID}}, {"type": "null"}],
                         "description": "`ride_id`: the id of a single ride (N = 1), echoed in the response's "
                                        "parameters; other parameters are ignored."}


# ---- Open Inference Protocol V2 ------------------------------------------------------------

def _zone_groups() -> list[tuple[list[str], Schema]]:
    """Integer datatypes grouped by the zone values they can hold (INT8 stops at 127, UINT8 at 255)."""
    groups: dict[tuple[int, int], list[str]] = {}
    for datatype in v2.INT_TYPES:
        low, high = v2.RANGES[datatype]
        bounds = (max(int(low), MIN_ZONE), min(int(high), MAX_ZONE))
        groups.setdefault(bounds, []).append(datatype)
    return [(types, zone(*bounds)) for bounds, types in groups.items()]


def _tensor_branch(name: str, datatypes: list[str], value: Schema, rows: int, nested: bool) -> Schema:
    n = {"type": "integer", "minimum": 1, "maximum": rows}
    if nested:  # [N, 1]: rows flat or as one-value lists
        shape = {"type": "array", "prefixItems": [n, {"const": 1}], "minItems": 2, "maxItems": 2}
        item: Schema = {"anyOf": [value, {"type": "array", "prefixItems": [value], "minItems": 1, "maxItems": 1}]}
    else:
        shape = {"type": "array", "prefixItems": [n], "minItems": 1, "maxItems": 1}
        item = value
    datatype = {"const": datatypes[0]} if len(datatypes) == 1 else {"enum": datatypes}
    return {
        "type": "object", "title": f"{name} {'/'.join(datatypes)} {'[N, 1]' if nested else '[N]'}",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {"name": {"const": name}, "shape": shape, "datatype": datatype,
                       "parameters": NULLABLE_OBJECT,
                       "data": {"type": "array", "items": item, "minItems": 1, "maxItems": rows}},
    }


def v2_tensor(name: str, rows: int) -> Schema:
    """One input tensor: its datatypes, each with the values it can hold, shape [N] or [N, 1]."""
    if name == "trip_distance":
        groups = [(list(v2.FLOAT_TYPES), DISTANCE)]
    elif name == v2.RIDE_ID:
        groups = [(["BYTES"], {"type": "string", "minLength": 1, "maxLength": MAX_RIDE_ID_LENGTH}),
                  (["INT64"], RIDE_ID["anyOf"][1])]
    else:
        groups = _zone_groups()
    branches = [_tensor_branch(name, types, value, rows, nested) for types, value in groups
                for nested in (False, True)]
    return {"description": f"Input tensor {name}: shape[0] = N = the number of values.", "oneOf": branches}


def v2_inference_request(rows: int) -> Schema:
    refs = [{"$ref": f"#/components/schemas/V2Input_{name}"} for name in (*RAW_COLUMNS, v2.RIDE_ID)]
    orders = [{"type": "array", "prefixItems": list(order), "minItems": len(order), "maxItems": len(order)}
              for order in [*itertools.permutations(refs[:3]), *itertools.permutations(refs)]]
    return {
        "type": "object", "title": "InferenceRequest",
        "description": "The three input tensors and optionally a `ride_id` tensor, in any order, each once, "
                       f"all with the same N (1 to {rows}); shape[0] of each equals its number of values. "
                       "`parameters.ride_id` names a single ride (N = 1, no `ride_id` tensor).",
        "x-length-rules": ["inputs[*].shape[0] == len(inputs[*].data)", "inputs[*].shape[0] all equal",
                           "parameters.ride_id only when N == 1 and no ride_id tensor"],
        "required": ["inputs"],
        "properties": {
            "id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "parameters": V2_PARAMETERS,
            "inputs": {"oneOf": orders},
            "outputs": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"const": v2.OUTPUT}, "parameters": NULLABLE_OBJECT}}}]},
        },
        "examples": [v2.InferenceRequest.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
    }


# ---- MLflow scoring protocol -----------------------------------------------------------------

def dataframe_split(rows: int) -> Schema:
    index = {"type": "array", "minItems": 1, "maxItems": rows,
             "description": "Row labels (ignored): one per row."}
    exact = [{"type": "object", "title": f"columns {', '.join(order)}", "required": ["columns", "data"],
              "properties": {"columns": {"const": list(order)}, "index": index,
                             "data": {"type": "array", "minItems": 1, "maxItems": rows, "items": {
                                 "type": "array", "prefixItems": [FIELD[c] for c in order],
                                 "minItems": 3, "maxItems": 3}}}}
             for order in itertools.permutations(RAW_COLUMNS)]
    wider = {"type": "object", "title": "the ride columns among others", "required": ["columns", "data"],
             "properties": {
                 "columns": {"type": "array", "items": {"type": "string"}, "minItems": 4, "uniqueItems": True,
                             "allOf": [{"contains": {"const": c}} for c in RAW_COLUMNS]},
                 "index": index,
                 "data": {"type": "array", "minItems": 1, "maxItems": rows, "items": {"type": "array"}}}}
    return {
        "title": "DataframeSplit",
        "description": "`pandas.DataFrame.to_dict(orient='split')`: unique column names including the three "
                       "ride fields; each row has one value per column, and the ride fields' values are valid "
                       "rides (and a `ride_id` column's values valid ride ids); `index`, if given, has one label "
                       "per row. Other columns are ignored.",
        "x-length-rules": ["len(data[*]) == len(columns)", "len(index) == len(data)",
                           "data[*][columns.index(field)] is valid for field"],
        "oneOf": [*exact, wider],
    }


def ride_columns(rows: int) -> Schema:
    return {"type": "object", "title": "RideColumns", "required": list(RAW_COLUMNS),
            "description": "Columns of equal length (one ride per index), `ride_id` optional; other columns "
                           "are ignored.",
            "x-length-rules": ["all columns have the same length"],
            "properties": {c: {"type": "array", "items": s, "minItems": 1, "maxItems": rows}
                           for c, s in {**FIELD, "ride_id": RIDE_ID}.items()},
            "additionalProperties": {"type": "array", "minItems": 1, "maxItems": rows}}


def records(rows: int) -> Schema:
    return {"type": "array", "items": {"$ref": "#/components/schemas/Ride"}, "minItems": 1, "maxItems": rows}


def csv_pattern(rows: int) -> str:
    """The plain CSV the service reads: a header naming the three ride fields, then 1..rows lines."""
    cell = {"PULocationID": "[1-9][0-9]{0,2}", "DOLocationID": "[1-9][0-9]{0,2}",
            "trip_distance": r"(?:1000(?:\.0{1,6})?|(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,6})?)"}
    forms = []
    for order in itertools.permutations(RAW_COLUMNS):
        line = ",".join(cell[c] for c in order)
        forms.append(f"{','.join(order)}\\r?\\n(?:{line}\\r?\\n){{0,{rows - 1}}}{line}(?:\\r?\\n)?")
    return "^(?:" + "|".join(forms) + ")$"


def components(rows: int) -> dict[str, Schema]:
    """The request schemas, under their component names."""
    schemas = {f"V2Input_{name}": v2_tensor(name, rows) for name in (*RAW_COLUMNS, v2.RIDE_ID)}
    schemas["InferenceRequest"] = v2_inference_request(rows)
    schemas["DataframeSplit"] = dataframe_split(rows)
    schemas["RideColumns"] = ride_columns(rows)
    return schemas
