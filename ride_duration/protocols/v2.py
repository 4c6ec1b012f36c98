"""Open Inference Protocol V2 (KServe, Triton, MLServer clients), REST, under ``/v2``.

The model is named by the ``MODEL_NAME`` setting and versioned by the serving model's version.
``POST /v2/models/{name}/infer`` takes three tensors of shape ``[N]`` (or ``[N, 1]``):
``PULocationID`` and ``DOLocationID`` (INT64; other integer types are accepted) and
``trip_distance`` (FP64; FP32/FP16 accepted), and answers one FP64 tensor ``duration``.
A value its tensor's datatype cannot hold (300 as UINT8) is a 400, like a wrong datatype.
The N rides go through the same validation and single model call as ``/predict``.

Ride ids (optional): an input tensor ``ride_id`` of shape ``[N]`` (BYTES: strings; or INT64),
echoed as an output tensor ``ride_id`` of the same datatype; or, for a single ride, the request
parameter ``ride_id``, echoed in the response's ``parameters``. The rule is ``/predict``'s
(:data:`ride_duration.schemas.RideId`); a bad id is a 422 naming ``ride_id[i]`` or
``parameters.ride_id``.

Errors are V2's ``{"error": "<message>"}`` with the status ``/predict`` would give (400 bad
request, 404 unknown model or version, 413, 415, 422 bad values, 503 no model). Health and
readiness answer 200 for true and 503 for false. JSON tensors only (no binary extension).
"""

from __future__ import annotations

import re
import typing as t

import orjson
from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import errors
from ..errors import InvalidInput, MalformedJSON, ServiceError, UnsupportedMediaType
from ..schemas import MAX_REPORTED_ERRORS, describe, ride_id_problem
from ..startup import get_holder
from ..web import service
from ..web.api import after_predict, is_json, json_response, model_answer

if t.TYPE_CHECKING:
    from ..model.predictor import LoadedModel

bp = Blueprint("v2", __name__, url_prefix="/v2")
SERVER = {"name": "ride-duration", "version": "1", "extensions": []}

Datatype = t.Literal["INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8", "FP64", "FP32", "FP16",
                     "BYTES"]
InputName = t.Literal["PULocationID", "DOLocationID", "trip_distance", "ride_id"]
INT_TYPES, FLOAT_TYPES = t.get_args(Datatype)[:8], t.get_args(Datatype)[8:11]  # zones, distance
RIDE_INPUTS = {"PULocationID": INT_TYPES, "DOLocationID": INT_TYPES, "trip_distance": FLOAT_TYPES}
"""The three tensors every request has (what the model metadata lists)."""
RIDE_ID = "ride_id"
RIDE_ID_TYPES = ("BYTES", "INT64")
INPUTS = {**RIDE_INPUTS, RIDE_ID: RIDE_ID_TYPES}
"""Every input tensor: the three ride fields, and the optional ``ride_id``."""
OUTPUT = "duration"
RANGES: dict[str, tuple[float, float]] = {
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2 ** b - 1) for b in (8, 16, 32, 64)},
    "FP16": (-65504.0, 65504.0), "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
}
"""What each datatype can hold; a value outside its tensor's datatype is a 400 (FP64: any finite)."""


class UnknownModel(ServiceError):
    status_code = 404
    code = "model_not_found"


# ---- the protocol's messages (pydantic: they validate requests and generate the OpenAPI) -----

class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    """One of the three input tensors; ``data`` is row-major, flat or nested.

    Zones take an integer datatype (INT64 preferred), ``trip_distance`` a float one (FP64).
    """

    model_config = ConfigDict(strict=True)

    name: InputName
    shape: t.Annotated[list[t.Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=2)]
    datatype: Datatype
    parameters: dict[str, t.Any] | None = None
    data: list[t.Any]


class RequestOutput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: t.Literal["duration"]
    parameters: dict[str, t.Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [{
        "id": "42",
        "inputs": [
            {"name": "PULocationID", "shape": [2], "datatype": "INT64", "data": [10, 43]},
            {"name": "DOLocationID", "shape": [2], "datatype": "INT64", "data": [50, 151]},
            {"name": "trip_distance", "shape": [2], "datatype": "FP64", "data": [40.0, 1.01]},
        ]}]})

    id: str | None = None
    parameters: dict[str, t.Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[str]
    """``duration`` (FP64), and ``ride_id`` (the request's ``ride_id`` tensor echoed, null for a ride without)."""


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]
    parameters: dict[str, str | int] | None = None
    """``warnings``: JSON text of the plausibility warnings, present only when a ride has one;
    ``ride_id``: the request's ``parameters.ride_id``, echoed."""


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str


# ---- core: request → rides → response (no Flask) -------------------------------------------

def _flatten(name: str, data: list[t.Any], depth: int) -> list[t.Any]:
    """Row-major ``data`` of a ``[N]`` or ``[N, 1]`` tensor → its N values.

    ``[N, 1]`` data may be flat or nested (``[[v], ...]``), each inner list holding one value.
    """
    if depth == 1:
        return data
    flat: list[t.Any] = []
    for item in data:
        if isinstance(item, list):
            if len(item) != 1:
                raise MalformedJSON(f"input tensor '{name}' has shape [N, 1]: each row holds exactly one value")
            item = item[0]
        flat.append(item)
    return flat


def check_range(name: str, datatype: str, data: list[t.Any]) -> None:
    """:raises MalformedJSON: a number the tensor's datatype cannot hold, e.g. 300 as UINT8 (400)."""
    bounds = RANGES.get(datatype)
    if bounds is None:
        return
    low, high = bounds
    for i, value in enumerate(data):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
            raise MalformedJSON(f"input tensor '{name}' row {i}: value outside the {datatype} range "
                                f"[{low}, {high}]")


def parse_request(payload: t.Any) -> InferenceRequest:
    """:raises MalformedJSON: the body is not an inference request (400)."""
    try:
        return InferenceRequest.model_validate(payload)
    except ValidationError as exc:
        problems = describe(exc)[:MAX_REPORTED_ERRORS]
        raise MalformedJSON("invalid inference request: " + "; ".join(
            f"{d['field']}: {d['problem']}" for d in problems)) from None


def rides_from_tensors(req: InferenceRequest) -> list[dict[str, t.Any]]:
    """The three named tensors → one ride per row. :raises MalformedJSON: (400)."""
    tensors: dict[str, list[t.Any]] = {}
    for tensor in req.inputs:
        if tensor.name in tensors:
            raise MalformedJSON(f"input tensor '{tensor.name}' is given twice")
        if tensor.datatype not in INPUTS[tensor.name]:
            kind = {"trip_distance": "a float", RIDE_ID: "the BYTES or an integer"}.get(tensor.name, "an integer")
            raise MalformedJSON(f"input tensor '{tensor.name}' needs {kind} datatype such as {INPUTS[tensor.name][0]}")
        if len(tensor.shape) == 2 and tensor.shape[1] != 1:
            raise MalformedJSON(f"input tensor '{tensor.name}' must have shape [N] or [N, 1]")
        data = _flatten(tensor.name, tensor.data, len(tensor.shape))
        check_range(tensor.name, tensor.datatype, data)
        if tensor.name == RIDE_ID:
            check_ride_ids(tensor.datatype, data)
        if len(data) != tensor.shape[0]:
            raise MalformedJSON(f"input tensor '{tensor.name}' does not have as many values as its shape says")
        tensors[tensor.name] = data
    missing = [name for name in RIDE_INPUTS if name not in tensors]
    if missing:
        raise MalformedJSON(f"missing input tensor(s): {', '.join(missing)}")
    if len({len(data) for data in tensors.values()}) != 1:
        raise MalformedJSON("input tensors must all have the same length N")
    names = list(tensors)
    return [dict(zip(names, row, strict=True)) for row in zip(*tensors.values(), strict=True)]


def check_ride_ids(datatype: str, data: list[t.Any]) -> None:
    """:raises MalformedJSON: a ``ride_id`` value its datatype cannot hold (BYTES: text; INT64: integers) (400)."""
    for i, value in enumerate(data):
        if datatype == "BYTES":
            fits = isinstance(value, str)
        else:
            fits = not isinstance(value, bool) and (isinstance(value, int)
                                                    or (isinstance(value, float) and value.is_integer()))
        if not fits:
            raise MalformedJSON(f"input tensor '{RIDE_ID}' row {i}: a {datatype} tensor holds "
                                f"{'strings' if datatype == 'BYTES' else 'integers'}")


def parameter_ride_id(req: InferenceRequest, rides: list[dict[str, t.Any]]) -> bool:
    """Put a request's ``parameters.ride_id`` on its single ride; True if there was one.

    :raises InvalidInput: not a ride id, more than one ride, or a ``ride_id`` tensor too (422).
    """
    if not req.parameters or RIDE_ID not in req.parameters:
        return False
    problem = ride_id_problem(req.parameters[RIDE_ID])
    if problem is None and len(rides) != 1:
        problem = "names one ride: send a ride_id input tensor for several rides"
    if problem is None and RIDE_ID in rides[0]:
        problem = "cannot be given with a ride_id input tensor"
    if problem is not None:
        raise InvalidInput("1 invalid field(s)", [{"field": f"parameters.{RIDE_ID}", "problem": problem}])
    rides[0][RIDE_ID] = req.parameters[RIDE_ID]
    return True


def tensor_paths(exc: InvalidInput) -> InvalidInput:
    """``[3].trip_distance`` → ``trip_distance[3]``: value problems named by tensor and row."""
    for detail in exc.details or ():
        detail["field"] = re.sub(r"^\[(\d+)\]\.(\w+)$", r"\2[\1]", detail["field"])
    return exc


def infer(payload: t.Any, model: LoadedModel, name: str, max_batch: int,
          after: service.AfterPredict | None = None) -> tuple[dict[str, t.Any], int]:
    """One inference request → the V2 response body and the number of rides.

    Plausibility warnings go in the response's ``parameters`` (V2 parameter values are scalars,
    so ``warnings`` is the JSON text of the list, fields named ``trip_distance[i]``).
    """
    req = parse_request(payload)
    rides = rides_from_tensors(req)
    by_parameter = parameter_ride_id(req, rides)
    try:
        body, n = service.predict_payload(rides, model, max_batch, after)
    except InvalidInput as exc:
        raise tensor_paths(exc) from None
    durations = body["durations"]
    response: dict[str, t.Any] = {"model_name": name, "model_version": model.version}
    if req.id is not None:
        response["id"] = req.id
    response["outputs"] = [{"name": OUTPUT, "datatype": "FP64", "shape": [len(durations)], "data": durations}]
    parameters: dict[str, t.Any] = {}
    if by_parameter:
        parameters[RIDE_ID] = body["ride_ids"][0]
    elif "ride_ids" in body:
        datatype = next(x.datatype for x in req.inputs if x.name == RIDE_ID)
        response["outputs"].append({"name": RIDE_ID, "datatype": datatype, "shape": [n], "data": body["ride_ids"]})
    if "warnings" in body:
        warnings = [{**w, "field": f"{w['field'].rpartition('.')[2]}[{w['field'][1:].partition(']')[0]}]"}
                    for w in body["warnings"]]
        parameters["warnings"] = orjson.dumps(warnings).decode()
    if parameters:
        response["parameters"] = parameters
    return response, n


def model_metadata(name: str, model: LoadedModel) -> dict[str, t.Any]:
    return {
        "name": name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": [{"name": n, "datatype": types[0], "shape": [-1]} for n, types in RIDE_INPUTS.items()],
        "outputs": [{"name": OUTPUT, "datatype": "FP64", "shape": [-1]}],
    }


# ---- routes ---------------------------------------------------------------------------------

def served_model(name: str, version: str | None = None) -> tuple[str, LoadedModel]:
    """The model at ``name`` (and ``version``). :raises UnknownModel: (404) :raises ModelNotReady: (503)."""
    served = current_app.config["SETTINGS"].model_name
    if name != served:
        raise UnknownModel(f"unknown model; this server serves '{served}'")
    model = get_holder(current_app).require()
    if version is not None and version != model.version:
        raise UnknownModel(f"model version not served; serving '{model.version}'")
    return served, model


@bp.get("")
def server_metadata() -> Response:
    return json_response(SERVER)


@bp.get("/health/live")
def live() -> Response:
    return json_response({"live": True})


@bp.get("/health/ready")
def ready() -> Response:
    is_ready = get_holder(current_app).current is not None
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def metadata(name: str, version: str | None = None) -> Response:
    served, model = served_model(name, version)
    return json_response(model_metadata(served, model))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    served = current_app.config["SETTINGS"].model_name
    if name != served:
        raise UnknownModel(f"unknown model; this server serves '{served}'")
    model = get_holder(current_app).current
    is_ready = model is not None and (version is None or version == model.version)
    if model is not None and not is_ready:
        raise UnknownModel(f"model version not served; serving '{model.version}'")
    return json_response({"name": served, "ready": is_ready}, 200 if is_ready else 503)


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer_route(name: str, version: str | None = None) -> Response:
    """Tensors in, ``duration`` out; one model call for the N rides."""
    if request.mimetype and not is_json(request.mimetype):  # no Content-Type: JSON, as V2 clients assume
        raise UnsupportedMediaType("Content-Type must be application/json")
    if "Inference-Header-Content-Length" in request.headers:
        raise MalformedJSON("the binary tensor data extension is not supported; send JSON tensors")
    served, model = served_model(name, version)
    payload = service.parse_json(request.get_data(cache=False))
    body, _ = infer(payload, model, served, current_app.config["MAX_BATCH_SIZE"], after_predict)
    return model_answer(body, model.version)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


@bp.errorhandler(ServiceError)
def on_service_error(exc: ServiceError) -> Response:
    message = exc.message
    if exc.details:
        message += ": " + "; ".join(f"{d['field']}: {d['problem']}" for d in exc.details)
    return error_response(exc.status_code, message)


errors.use_protocol_errors(bp, ("/v2",), error_response)
