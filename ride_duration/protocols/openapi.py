"""The OpenAPI 3.1 document, built from the pydantic models that validate and shape the traffic.

Request schemas are the validators themselves (``schemas.RIDE``/``RIDES``, the MLflow envelope
adapters, the V2 ``InferenceRequest``); response schemas are the pydantic models below and in the
protocol modules. ``OPERATIONS`` names, for each route, every status it can answer; only routes
the app actually has are emitted (``/metrics`` appears once its blueprint is registered), and
``tests/test_openapi.py`` fails when a route has no entry here.

Not per operation, so stated here and in ``info.description``: any unknown path answers 404 and a
known path with another method 405, in the error shape of the path's protocol.
"""

from __future__ import annotations

import re
import typing as t

from pydantic import BaseModel, ConfigDict, TypeAdapter

from ..schemas import RIDE, RIDES
from ..startup import get_holder
from ..web import auth
from . import mlflow_scoring as mlf
from . import request_schemas, v2

if t.TYPE_CHECKING:
    from flask import Flask

JSON = "application/json"
OPENAPI_VERSION = "3.1.0"
DOCS_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js", "favicon-32x32.png",
               "favicon-16x16.png")


# ---- response models of the core endpoints (the core returns plain dicts) -------------------

class Problem(BaseModel):
    field: str
    problem: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Problem] | None = None


class Error(BaseModel):
    """The service's error body (``errors.ServiceError.to_dict``)."""

    error: ErrorDetail


class RideWarning(BaseModel):
    """A ride answered although its distance is implausible (docs/model.md, "What implausible means")."""

    field: str
    """``trip_distance``, or ``[i].trip_distance`` in a batch."""
    reason: t.Literal["distance_zero", "distance_over_max", "distance_beyond_zone_pair"]
    message: str


class Prediction(BaseModel):
    duration: float
    model_version: str
    ride_id: str | int | None = None
    """The request's ``ride_id``, present when it had one."""
    warnings: list[RideWarning] | None = None
    """Present only when the ride's distance is implausible."""


class Predictions(BaseModel):
    durations: list[float]
    model_version: str
    ride_ids: list[str | int | None] | None = None
    """One per ride (null for a ride without), present when any ride of the batch had a ``ride_id``."""
    warnings: list[RideWarning] | None = None
    """Present only when a ride's distance is implausible."""


class Health(BaseModel):
    status: t.Literal["ok"]


class Refusal(BaseModel):
    version: str
    reason: str
    code: str | None = None
    """Why, as a word: ``pickle_refused``, ``unsigned``, ``bad_signature``, ``digest_mismatch``,
    ``unsafe_types`` or ``invalid``."""


class ShadowState(BaseModel):
    """The shadow model (``SHADOW_MODEL_URI``): what scores the sampled rides off the response path."""

    status: t.Literal["scoring", "unavailable"]
    model_version: str | None
    uri: str | None
    sample_rate: float
    reason: str | None = None
    """Why no shadow model is loaded (``unavailable``)."""
    refused: list[Refusal] | None = None


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: t.Literal["ready"]
    model_version: str
    source: str
    sha256: str | None = None
    sklearn_version: str | None = None
    warnings: list[str]
    refused: list[Refusal] | None = None
    """Registry versions this worker refused to serve (it kept the model above), and why."""
    shadow: ShadowState | None = None
    """Present when a shadow model is configured."""


class NotReady(BaseModel):
    status: t.Literal["not_ready"]
    reason: str | None
    refused: list[Refusal] | None = None
    shadow: ShadowState | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None
    version: str
    source: str
    sha256: str | None
    features: list[str]
    feature_step: dict[str, t.Any]
    """The feature step the model needs (``{"name": "flagged-v2", "max_miles": 30.0}``; docs/model.md)."""
    n_features: int
    regressor: str
    fast_path: bool
    trained_at: str | None
    train_data: dict[str, t.Any] | None
    valid_data: dict[str, t.Any] | None
    metrics: dict[str, t.Any] | None
    """``valid_rmse`` (all 1–60 minute rides) and ``valid_rmse_plausible``, with the previous model's."""
    plausibility: dict[str, t.Any] | None = None
    sklearn_version: str | None
    trained_sklearn_version: str | None


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Error, Prediction, Predictions, Health, Refusal, Readiness, NotReady, ModelCard,
    mlf.MlflowPredictions, mlf.MlflowError,
    v2.ServerMetadata, v2.ServerLive, v2.ServerReady, v2.ModelReady, v2.ModelMetadata,
    v2.InferenceResponse, v2.V2Error,
)


def component_schemas(max_batch: int) -> dict[str, t.Any]:
    """Every schema, in one ``components.schemas`` namespace (class names are unique).

    Request bodies of the protocols are the exact schemas of ``request_schemas``; ``max_batch``
    (``MAX_BATCH_SIZE``) bounds every batch, since a longer one is answered 413.
    """
    inputs: list[tuple[str, t.Any, TypeAdapter[t.Any]]] = [("Ride", "validation", RIDE)]
    inputs += [(m.__name__, "serialization", TypeAdapter(m)) for m in RESPONSE_MODELS]
    _, defs = TypeAdapter.json_schemas(inputs, ref_template="#/components/schemas/{model}")
    schemas = dict(defs["$defs"])
    item = RIDES.json_schema(ref_template="#/components/schemas/{model}")["items"]
    schemas["Rides"] = {"type": "array", "items": item, "minItems": 1, "maxItems": max_batch,
                        "description": f"A batch of 1 to {max_batch} rides (MAX_BATCH_SIZE; more is a 413)."}
    schemas.update(request_schemas.components(max_batch))
    records = request_schemas.records(max_batch)
    schemas["InvocationsRequest"] = {
        "description": "Exactly one of the four MLflow input fields; ``params`` is accepted and ignored.",
        "oneOf": [
            _envelope("dataframe_split", ref("DataframeSplit")),
            _envelope("dataframe_records", records),
            _envelope("instances", {"oneOf": [records, ref("RideColumns")]}),
            _envelope("inputs", {"oneOf": [records, ref("RideColumns")]}),
        ],
    }
    return dict(sorted(schemas.items()))


def _envelope(key: str, schema: dict[str, t.Any]) -> dict[str, t.Any]:
    others = {"not": {"anyOf": [{"required": [k]} for k in mlf.FORMATS if k != key]}}
    return {"type": "object", "title": key, "required": [key],
            "properties": {key: schema, "params": mlf.PARAMS.json_schema()}, **others}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# ---- the operations ---------------------------------------------------------------------------

def resp(description: str, schema: dict[str, t.Any] | None = None, media: str = JSON,
         example: t.Any = None) -> dict[str, t.Any]:
    content: dict[str, t.Any] = {"schema": schema if schema is not None else {"type": "string"}}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {media: content}}


def errors(shape: str, *statuses: int, notes: dict[int, str] | None = None) -> dict[str, t.Any]:
    what = {400: "Malformed request", 404: "Unknown model or version", 413: "Too many rides or body too large",
            415: "Unsupported Content-Type", 422: "A ride failed validation (fields listed, values never echoed)",
            503: "No model is loaded yet"}
    what.update(notes or {})
    return {str(s): resp(what[s], ref(shape)) for s in statuses}


CSV_MIN_LENGTH = len("PULocationID,DOLocationID,trip_distance\n1,1,0")
"""The shortest CSV body that scores, the header and one row: an empty body is declared refused (400)."""
RIDE_EXAMPLE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}
BATCH_EXAMPLE = [RIDE_EXAMPLE, {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0}]


def path_parameters(model_name: str, version: str | None) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """``{name}`` is the served model (any other answers 404); ``{version}`` the serving version."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [model_name]},
            "description": "Model name (the MODEL_NAME setting; any other name answers 404)"}
    schema = {"type": "string"} if version is None else {"type": "string", "enum": [version]}
    return name, {"name": "version", "in": "path", "required": True, "schema": schema,
                  "description": "The serving model version, as in GET /model (any other answers 404)"}


def operations(max_batch: int = 10_000, model_name: str = "nyc-taxi-ride-duration",
               version: str | None = None) -> dict[tuple[str, str], dict[str, t.Any]]:
    """``(flask rule, method)`` → OpenAPI operation."""
    name, version_param = path_parameters(model_name, version)
    v2_model = {"parameters": [name]}
    v2_version = {"parameters": [name, version_param]}
    metadata = {"tags": ["Open Inference Protocol V2"], "responses": {
        "200": resp("Model metadata", ref("ModelMetadata")), **errors("V2Error", 404, 503)}}
    model_ready = {"tags": ["Open Inference Protocol V2"], "responses": {
        "200": resp("Model is ready", ref("ModelReady")), "503": resp("Model not loaded", ref("ModelReady")),
        **errors("V2Error", 404)}}
    infer = {
        "tags": ["Open Inference Protocol V2"],
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("InferenceRequest")}}},
        "responses": {"200": resp("Durations in minutes, tensor `duration`", ref("InferenceResponse")),
                      **errors("V2Error", 400, 404, 413, 415, 422, 503, notes={
                          400: "Malformed request: not JSON, not an inference request (e.g. a `shape` value that "
                               "is not a 64-bit integer), or shapes that disagree with the data"})},
    }
    return {
        ("/predict", "post"): {
            "operationId": "predict", "tags": ["Predict"], "summary": "Predict ride durations (minutes)",
            "description": "One ride object → `duration`; an array → `durations`, in order. Fields other than "
                           "the three ride fields are ignored.",
            "requestBody": {"required": True, "content": {JSON: {
                "schema": {"oneOf": [ref("Ride"), ref("Rides")]},
                "examples": {"one ride": {"value": RIDE_EXAMPLE}, "batch": {"value": BATCH_EXAMPLE}}}}},
            "responses": {"200": resp("Predicted duration(s)", {"oneOf": [ref("Prediction"), ref("Predictions")]}),
                          **errors("Error", 400, 413, 415, 422, 503)},
        },
        ("/health", "get"): {"operationId": "health", "tags": ["Operations"], "summary": "Liveness",
                             "responses": {"200": resp("The process answers", ref("Health"))}},
        ("/ready", "get"): {"operationId": "ready", "tags": ["Operations"], "summary": "Readiness",
                            "responses": {"200": resp("A model is serving", ref("Readiness")),
                                          "503": resp("No model yet, and why", ref("NotReady"))}},
        ("/model", "get"): {"operationId": "model", "tags": ["Operations"], "summary": "The serving model's card",
                            "responses": {"200": resp("Identity, provenance, metrics", ref("ModelCard")),
                                          **errors("Error", 503)}},
        ("/metrics", "get"): {"operationId": "metrics", "tags": ["Operations"], "summary": "Prometheus metrics",
                              "responses": {"200": resp("Prometheus text exposition format", media="text/plain")}},
        ("/invocations", "post"): {
            "operationId": "mlflowInvocations", "tags": ["MLflow scoring protocol"],
            "summary": "Score rides the way `mlflow models serve` does",
            "requestBody": {"required": True, "content": {
                JSON: {"schema": ref("InvocationsRequest"), "examples": {
                    "dataframe_split": {"value": {"dataframe_split": {
                        "columns": list(RIDE_EXAMPLE), "data": [list(r.values()) for r in BATCH_EXAMPLE]}}},
                    "dataframe_records": {"value": {"dataframe_records": BATCH_EXAMPLE}},
                    "inputs (columns)": {"value": {"inputs": {k: [r[k] for r in BATCH_EXAMPLE] for k in RIDE_EXAMPLE}}},
                }},
                "text/csv": {"schema": {
                    "type": "string", "pattern": request_schemas.csv_pattern(max_batch),
                    "minLength": CSV_MIN_LENGTH,
                    "description": "A header row naming the columns, then one ride per line (UTF-8; "
                                   "the pattern is the plain form: RFC 4180 quoting and other columns, "
                                   "which are ignored, are read too). Names and cells are not trimmed."},
                             "example": "PULocationID,DOLocationID,trip_distance\n43,151,1.01\n10,50,40.0\n"},
            }},
            "responses": {"200": resp("One duration (minutes) per row", ref("MlflowPredictions")),
                          **errors("MlflowError", 400, 413, 415, 503,
                                   notes={400: "BAD_REQUEST (not a scoring request: e.g. an empty body, a CSV "
                                               "body without a header row) or INVALID_PARAMETER_VALUE (a ride "
                                               "failed validation; fields listed)"})},
        },
        ("/ping", "get"): {"operationId": "mlflowPing", "tags": ["MLflow scoring protocol"],
                           "summary": "MLflow health check",
                           "responses": {"200": resp("A model is loaded", media="text/plain"),
                                         **errors("MlflowError", 503)}},
        ("/version", "get"): {"operationId": "mlflowVersion", "tags": ["MLflow scoring protocol"],
                              "summary": "MLflow version of the protocol",
                              "responses": {"200": resp("e.g. 3.17.2", media="text/plain")}},
        ("/v2", "get"): {"operationId": "v2ServerMetadata", "tags": ["Open Inference Protocol V2"],
                         "summary": "Server metadata",
                         "responses": {"200": resp("Name, version, extensions", ref("ServerMetadata"))}},
        ("/v2/health/live", "get"): {"operationId": "v2ServerLive", "tags": ["Open Inference Protocol V2"],
                                     "summary": "Server liveness",
                                     "responses": {"200": resp("Live", ref("ServerLive"))}},
        ("/v2/health/ready", "get"): {"operationId": "v2ServerReady", "tags": ["Open Inference Protocol V2"],
                                      "summary": "Server readiness",
                                      "responses": {"200": resp("Ready", ref("ServerReady")),
                                                    "503": resp("Not ready", ref("ServerReady"))}},
        ("/v2/models/<name>", "get"): {"operationId": "v2ModelMetadata", "summary": "Model metadata",
                                       **v2_model, **metadata},
        ("/v2/models/<name>/versions/<version>", "get"): {
            "operationId": "v2ModelVersionMetadata", "summary": "Model version metadata", **v2_version, **metadata},
        ("/v2/models/<name>/ready", "get"): {"operationId": "v2ModelReady", "summary": "Model readiness",
                                            **v2_model, **model_ready},
        ("/v2/models/<name>/versions/<version>/ready", "get"): {
            "operationId": "v2ModelVersionReady", "summary": "Model version readiness", **v2_version, **model_ready},
        ("/v2/models/<name>/infer", "post"): {"operationId": "v2Infer", "summary": "Inference", **v2_model, **infer},
        ("/v2/models/<name>/versions/<version>/infer", "post"): {
            "operationId": "v2VersionInfer", "summary": "Inference on a version", **v2_version, **infer},
        ("/openapi.json", "get"): {"operationId": "openapi", "tags": ["Documentation"], "summary": "This document",
                                   "responses": {"200": resp("OpenAPI 3.1", {"type": "object"})}},
        ("/docs", "get"): {"operationId": "docs", "tags": ["Documentation"], "summary": "Interactive API page",
                           "responses": {"200": resp("Swagger UI, served offline", media="text/html")}},
        ("/docs/<filename>", "get"): {
            "operationId": "docsAsset", "tags": ["Documentation"], "summary": "Assets of the API page",
            "parameters": [{"name": "filename", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(DOCS_ASSETS)}}],
            "responses": {"200": {"description": "The asset", "content": {
                m: {"schema": {"type": "string"}} for m in
                ("text/css", "text/javascript", "application/javascript", "image/png")}},
                **errors("Error", 404, notes={404: "Not one of the page's assets"})},
        },
    }


def openapi_path(rule: str) -> str:
    """``/v2/models/<name>`` → ``/v2/models/{name}`` (converters dropped)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def documented_routes(app: Flask) -> list[tuple[str, str]]:
    """``(rule, method)`` of every routed operation, HEAD/OPTIONS and Flask's static route aside."""
    return sorted((rule.rule, method.lower()) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
                  for method in (rule.methods or ()) if method not in ("HEAD", "OPTIONS"))


REQUEST_ID = {"X-Request-ID": {"description": "The caller's request ID if it is sane, else a fresh one",
                               "schema": {"type": "string"}}}
INFO_DESCRIPTION = """Predicts NYC green-taxi ride durations (minutes) from pick-up zone, drop-off zone and
distance. Three ways in, one model and one validation: the service's own `/predict`, MLflow's scoring
protocol (`/invocations`) and the Open Inference Protocol V2 (`/v2/...`).

Errors: each protocol answers in its own shape (service: `{"error": {"code", "message", "details"}}`;
MLflow: `{"error_code", "message"}`; V2: `{"error"}`), never with a stack trace or the request's
values. Any unknown path answers 404 and a known path with another method 405, in that shape."""


def spec_version(app: Flask) -> str | None:
    """The serving model's version (what ``{version}`` may be), or None before a model is loaded."""
    model = get_holder(app).current
    return None if model is None else model.version


def build_spec(app: Flask) -> dict[str, t.Any]:
    """The OpenAPI document for the routes ``app`` has, its limits and the model it serves."""
    table = operations(app.config["MAX_BATCH_SIZE"], app.config["SETTINGS"].model_name, spec_version(app))
    protected = {r.rule for r in app.url_map.iter_rules() if r.endpoint in auth.PREDICTION_ENDPOINTS} \
        if "api_tokens" in app.extensions else set()
    paths: dict[str, dict[str, t.Any]] = {}
    for rule, method in documented_routes(app):
        op = table.get((rule, method))
        if op is None:
            continue
        op = {**op, "responses": {code: {**r, "headers": REQUEST_ID} for code, r in op["responses"].items()}}
        if rule in protected:
            op = with_bearer_auth(op, rule)
        paths.setdefault(openapi_path(rule), {})[method] = op
    components: dict[str, t.Any] = {"schemas": component_schemas(app.config["MAX_BATCH_SIZE"])}
    if protected:
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                        "description": "A token from API_TOKENS_FILE"}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "NYC ride-duration prediction service", "version": "1",
                 "description": INFO_DESCRIPTION},
        "tags": [{"name": n} for n in ("Predict", "MLflow scoring protocol", "Open Inference Protocol V2",
                                       "Operations", "Documentation")],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def with_bearer_auth(op: dict[str, t.Any], rule: str) -> dict[str, t.Any]:
    """An operation that needs a token (API_TOKENS_FILE): its security and its 401, in the path's shape."""
    error = "V2Error" if rule.startswith("/v2") else "MlflowError" if rule == "/invocations" else "Error"
    challenge = {"description": 'Bearer realm="ride-duration"', "schema": {"type": "string"}}
    unauthorized = {**resp("No valid bearer token (API_TOKENS_FILE is set)", ref(error)),
                    "headers": {**REQUEST_ID, "WWW-Authenticate": challenge}}
    return {**op, "security": [{"bearerAuth": []}], "responses": {**op["responses"], "401": unauthorized}}
