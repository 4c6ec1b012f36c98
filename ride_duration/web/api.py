"""HTTP routes of the service: read the request, call the core, write JSON."""

from __future__ import annotations

import time
import typing as t

import orjson
from flask import Blueprint, Response, current_app, g, request

from ..errors import UnsupportedMediaType
from ..startup import get_holder
from . import service

bp = Blueprint("api", __name__)
JSON = "application/json"


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype=JSON)


def is_json(mimetype: str) -> bool:
    return mimetype == JSON or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def after_predict(rides: list[t.Any], durations: list[float], version: str, codes: list[str]) -> None:
    """The tail of every prediction endpoint (``service.AfterPredict``): what ``/metrics`` and the
    access log count, the prediction log, and the shadow model's share of the rides (only queued
    here: the answer never waits for the shadow)."""
    ctx = g._get_current_object()  # one proxy lookup
    ctx.rides = len(rides)
    ctx.warnings = codes
    ctx.model_version = version
    extensions = current_app.extensions
    prediction_log = extensions.get("prediction_log")
    if prediction_log is not None:
        prediction_log(rides, durations, version)
    shadow = extensions.get("shadow")
    if shadow is not None:
        shadow.submit(rides, durations, version, (time.time(), ctx.get("request_id"), request.path))


def model_answer(body: object, version: str) -> Response:
    """A prediction's JSON answer with its ``X-Model-Version`` header."""
    response = json_response(body)
    response.headers["X-Model-Version"] = version
    return response


@bp.post("/predict")
def predict() -> Response:
    """One ride → ``{"duration", "model_version"}`` (+ ``ride_id``); an array → ``{"durations", "model_version"}``
    (+ ``ride_ids``)."""
    if not is_json(request.mimetype):
        raise UnsupportedMediaType("Content-Type must be application/json")
    model = get_holder(current_app).require()
    body, _ = service.predict_body(request.get_data(cache=False), model, current_app.config["MAX_BATCH_SIZE"],
                                   after_predict, request.environ.get(service.PAUSE_KEY))
    return model_answer(body, model.version)


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    """Readiness: 200 with the model's identity once one is loaded, else 503 with the reason; with a shadow
    model, its state under ``shadow``."""
    holder = get_holder(current_app)
    model = holder.current
    extra: dict[str, t.Any] = {"refused": list(holder.refused.values())} if holder.refused else {}
    shadow = current_app.extensions.get("shadow")
    if shadow is not None:  # its state never changes readiness: answers do not depend on it
        extra["shadow"] = shadow.state()
    if model is None:
        return json_response({"status": "not_ready", "reason": holder.reason, **extra}, 503)
    return json_response({**service.readiness(model), **extra})


@bp.get("/model")
def model_card() -> Response:
    """The serving model's metadata."""
    return json_response(service.model_card(get_holder(current_app).require()))
