"""MLflow's scoring protocol: what ``mlflow models serve`` answers, for clients that speak it.

* ``POST /invocations``: JSON with exactly one of ``dataframe_split``, ``dataframe_records``,
  ``instances`` or ``inputs`` (a list of records or a dict of columns), or ``text/csv`` with a
  header row; columns are the raw ride fields and an optional ``ride_id``. Answers
  ``{"predictions": [minutes, ...]}`` (plus ``ride_ids``, one per row, with a ``ride_id`` column).
  Column names must be unique, a ``dataframe_split`` index has one label per row, CSV names
  and cells are read as written, and the only Content-Type parameter is ``charset=utf-8``
  (MLflow's rule); ``docs/protocols.md`` compares this with ``mlflow models serve``.
* ``GET /ping``: 200 once a model is loaded (503 before); ``GET /version``: the MLflow version
  whose protocol this is, as plain text.

Errors use MLflow's shape, ``{"error_code", "message"}`` (plus ``details`` for bad fields), with
MLflow's codes: ``BAD_REQUEST`` (400: not JSON/CSV, wrong envelope), ``INVALID_PARAMETER_VALUE``
(400: a ride fails validation; ``/predict`` answers 422 there), ``REQUEST_LIMIT_EXCEEDED`` (413),
``TEMPORARILY_UNAVAILABLE`` (503). Unlike MLflow's server, never a stack trace or the payload.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import re
import typing as t
from typing import NotRequired

import orjson
from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from .. import errors
from ..errors import ServiceError, UnsupportedMediaType
from ..features import RAW_COLUMNS
from ..schemas import describe
from ..startup import get_holder
from ..web import service
from ..web.api import after_predict, json_response, model_answer

bp = Blueprint("mlflow", __name__)
PATHS = ("/invocations", "/ping", "/version")
JSON, CSV = "application/json", "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CSV_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
"""A CSV cell that is a number: JSON's number grammar, no padding (pandas would read ``" 1"``)."""
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,40}")


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


MLFLOW_VERSION = _installed("mlflow-skinny") or _installed("mlflow") or "3.17.2"
"""What ``GET /version`` answers: the MLflow release whose scoring protocol this is."""


class BadScoringRequest(ServiceError):
    """The request is not a scoring request MLflow would accept (envelope, CSV, encoding)."""

    status_code = 400
    code = "bad_request"


class DataframeSplit(TypedDict):
    """``pandas.DataFrame.to_dict(orient="split")``: what ``ScoringServerClient`` sends."""

    columns: t.Annotated[list[t.Annotated[str, Strict()]], Field(min_length=1)]
    data: t.Annotated[list[list[t.Any]], Field(min_length=1)]
    index: NotRequired[list[t.Any]]  # one label per row, else 400 (pandas refuses it too)


SPLIT = TypeAdapter(DataframeSplit)
RECORDS = TypeAdapter(list[t.Any])
PARAMS = TypeAdapter(dict[str, t.Any] | None)


class MlflowPredictions(BaseModel):
    """A successful ``/invocations`` answer: one duration in minutes per row, in row order."""

    predictions: list[float]
    ride_ids: list[str | int | None] | None = None
    """Present when the request had a ``ride_id`` column: one per row, in row order (null for a row without)."""
    warnings: list[dict[str, str]] | None = None
    """Present only when a row's distance is implausible: ``{"field": "[i].trip_distance", "reason", "message"}``."""


class MlflowError(BaseModel):
    """MLflow's error body (``MlflowException.serialize_as_json``), plus the bad fields."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error_code": "INVALID_PARAMETER_VALUE", "message": "1 invalid field(s)",
         "details": [{"field": "[0].trip_distance", "problem": "field required"}]}]})

    error_code: str = Field(description="BAD_REQUEST, INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED, "
                                        "ENDPOINT_NOT_FOUND, TEMPORARILY_UNAVAILABLE or INTERNAL_ERROR")
    message: str
    details: list[dict[str, str]] | None = None


# HTTP status of our errors → (MLflow error_code, status MLflow answers with it).
MLFLOW_CODES: dict[int, tuple[str, int]] = {
    400: ("BAD_REQUEST", 400),
    401: ("UNAUTHENTICATED", 401),
    404: ("ENDPOINT_NOT_FOUND", 404),
    405: ("BAD_REQUEST", 405),
    413: ("REQUEST_LIMIT_EXCEEDED", 413),
    415: ("BAD_REQUEST", 415),
    422: ("INVALID_PARAMETER_VALUE", 400),
    503: ("TEMPORARILY_UNAVAILABLE", 503),
}


def error_response(status: int, message: str, details: list[dict[str, t.Any]] | None = None) -> Response:
    code, http_status = MLFLOW_CODES.get(status, ("INTERNAL_ERROR", 500))
    body: dict[str, t.Any] = {"error_code": code, "message": message}
    if details is not None:
        body["details"] = details
    return json_response(body, http_status)


# ---- parsing: bytes + content type → list of raw rows (no Flask) -------------------------------

CSV_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")


def _ride_id_cell(text: str) -> str | int:
    """A ``ride_id`` cell: an integer as pandas reads it (``17``), anything else the text as written."""
    if CSV_INTEGER.fullmatch(text):
        value = int(text)
        if -(2 ** 63) <= value < 2 ** 63:
            return value
    return text


def _cell(text: str) -> t.Any:
    """A CSV cell: a number (JSON's grammar, exactly) becomes a number; anything else stays text."""
    if CSV_NUMBER.fullmatch(text):
        return orjson.loads(text)
    return text


def column_name(name: str, i: int) -> str:
    """How an error names a column: a ride field by name, any other by position (never echoed)."""
    return f"'{name}'" if name in RAW_COLUMNS else f"number {i + 1}"


def unique_columns(names: list[str], where: str) -> None:
    """:raises BadScoringRequest: a column name appears twice (MLflow/pandas would pick one silently)."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise BadScoringRequest(f"{where}: column {column_name(name, i)} appears twice (columns "
                                    f"{first[name] + 1} and {i + 1}); column names must be unique")
        first[name] = i


def rows_from_csv(body: bytes) -> list[dict[str, t.Any]]:
    """CSV with a header row → one dict per line; an empty cell counts as a missing field.

    Names and cells are taken as written, as pandas reads them: ``" trip_distance"`` is another
    column, and ``" 1.5"`` is text (not a number).
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadScoringRequest("CSV body is not valid UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not any(header):
            raise BadScoringRequest("CSV body needs a header row naming the columns")
        unique_columns(header, "CSV header")
        rows = []
        for line in reader:
            if not line:
                continue
            if len(line) > len(header):
                raise BadScoringRequest(f"CSV line {reader.line_num} has {len(line)} values for {len(header)} columns")
            cells = zip(header, line, strict=False)  # a short line leaves fields missing
            rows.append({name: _ride_id_cell(value) if name == "ride_id" else _cell(value)
                         for name, value in cells if value != ""})
    except csv.Error as exc:
        raise BadScoringRequest(f"malformed CSV at line {reader.line_num}: {exc}") from None
    return rows


def _structure(adapter: TypeAdapter[t.Any], value: t.Any, key: str) -> t.Any:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        details = describe(exc, key)
        raise BadScoringRequest(f"'{key}' is not in the expected shape", details) from None


def rows_from_columns(columns: dict[str, list[t.Any]], key: str) -> list[dict[str, t.Any]]:
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise BadScoringRequest(f"the columns in '{key}' have different lengths")
    n = lengths.pop() if lengths else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def rows_from_json(payload: t.Any) -> list[t.Any]:
    """MLflow's JSON envelopes → raw rows (validated later, as ``/predict`` validates)."""
    if not isinstance(payload, dict):
        raise BadScoringRequest(f"the input must be a JSON object with exactly one of the fields {', '.join(FORMATS)}")
    present = [key for key in FORMATS if key in payload]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise BadScoringRequest(f"the input must have exactly one of the fields {', '.join(FORMATS)}; found {found}")
    _structure(PARAMS, payload.get("params"), "params")  # accepted and ignored: this model takes no params
    key = present[0]
    value = payload[key]
    if key == "dataframe_split":
        split = _structure(SPLIT, value, key)
        names = split["columns"]
        unique_columns(names, "'dataframe_split'")
        if "index" in split and len(split["index"]) != len(split["data"]):
            raise BadScoringRequest(f"'dataframe_split' has {len(split['index'])} index labels for "
                                    f"{len(split['data'])} rows; give one label per row or no index")
        for i, row in enumerate(split["data"]):
            if len(row) != len(names):
                raise BadScoringRequest(f"'dataframe_split' row {i} has {len(row)} values for {len(names)} columns")
        return [dict(zip(names, row, strict=True)) for row in split["data"]]
    if key in ("instances", "inputs") and isinstance(value, dict):
        if not all(isinstance(column, list) for column in value.values()):  # keys unnamed: never echoed
            raise BadScoringRequest(f"each column of '{key}' must be an array of values")
        return rows_from_columns(value, key)
    return _structure(RECORDS, value, key)


def parse_invocation(body: bytes, mimetype: str, params: t.Mapping[str, str]) -> list[t.Any]:
    """The rows of one ``/invocations`` request.

    :raises UnsupportedMediaType: not JSON or CSV, a charset other than UTF-8, or any other
        Content-Type parameter (415, as MLflow's server since 2.0: ``format=pandas-split`` is gone).
    :raises BadScoringRequest, MalformedJSON: the body is not a scoring request (400).
    """
    unknown = sorted(set(params) - {"charset"})
    if unknown:
        named = ", ".join(name if _TOKEN.fullmatch(name) else "(unnamed)" for name in unknown[:5])
        raise UnsupportedMediaType(f"unsupported Content-Type parameter(s): {named}; only charset=utf-8 is accepted")
    if params.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("the scoring server only supports charset=utf-8")
    if mimetype == CSV:
        return rows_from_csv(body)
    if mimetype == JSON:
        return rows_from_json(service.parse_json(body))
    raise UnsupportedMediaType(f"Content-Type must be {JSON} or {CSV}")


# ---- routes ---------------------------------------------------------------------------------

@bp.post("/invocations")
def invocations() -> Response:
    """Score a batch: MLflow envelope in, ``{"predictions": [...]}`` out (one model call)."""
    model = get_holder(current_app).require()
    rows = parse_invocation(request.get_data(cache=False), request.mimetype, request.mimetype_params)
    body, _ = service.predict_payload(rows, model, current_app.config["MAX_BATCH_SIZE"], after_predict,
                                      request.environ.get(service.PAUSE_KEY))
    answer: dict[str, t.Any] = {"predictions": body["durations"]}
    for key in ("ride_ids", "warnings"):  # extra top-level keys: MLflow's clients read only "predictions"
        if key in body:
            answer[key] = body[key]
    return model_answer(answer, model.version)


@bp.get("/ping")
def ping() -> Response:
    """MLflow's health check: 200 once a model is loaded."""
    get_holder(current_app).require()
    return Response("\n", mimetype="text/plain")


@bp.get("/version")
def version() -> Response:
    """The MLflow version whose scoring protocol this server speaks."""
    return Response(MLFLOW_VERSION, mimetype="text/plain")


@bp.errorhandler(ServiceError)
def on_service_error(exc: ServiceError) -> Response:
    return error_response(exc.status_code, exc.message, exc.details)


errors.use_protocol_errors(bp, PATHS, error_response)


