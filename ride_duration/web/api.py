"""HTTP routes of the service: read the request, call the core, write JSON."""

from __future__ import annotations

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


@bp.post("/predict")
def predict() -> Response:
    """One ride → ``{"duration", "model_version"}``; an array → ``{"durations", "model_version"}``."""
    if not is_json(request.mimetype):
        raise UnsupportedMediaType("Content-Type must be application/json")
    model = get_holder(current_app).require()
    g.warnings = []
    body, rides = service.predict_body(
        request.get_data(cache=False), model, current_app.config["MAX_BATCH_SIZE"],
        current_app.extensions.get("prediction_log"), request.environ.get(service.PAUSE_KEY), g.warnings)
    g.rides = rides
    g.model_version = model.version
    response = json_response(body)
    response.headers["X-Model-Version"] = model.version
    return response


@bp.get("/health")
def health() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/ready")
def ready() -> Response:
    """Readiness: 200 with the model's identity once one is loaded, else 503 with the reason."""
    holder = get_holder(current_app)
    model = holder.current
    refused = {"refused": list(holder.refused.values())} if holder.refused else {}
    if model is None:
        return json_response({"status": "not_ready", "reason": holder.reason, **refused}, 503)
    return json_response({**service.readiness(model), **refused})


@bp.get("/model")
def model_card() -> Response:
    """The serving model's metadata."""
    return json_response(service.model_card(get_holder(current_app).require()))
