"""The prediction core: bytes in, plain dict out. No Flask here.

``predict_body`` is what ``POST /predict`` does, minus HTTP: parse, validate,
predict with the model the caller passes, and shape the answer. Every prediction endpoint
(``/predict``, ``/invocations``, V2) goes through :func:`predict_payload`, whose ``after``
callback is their one shared tail.
"""

from __future__ import annotations

import typing as t

import orjson

from ..errors import MalformedJSON
from ..features import NUMERICAL, WARNING_REASONS
from ..schemas import validate_rides

if t.TYPE_CHECKING:
    from ..model.predictor import LoadedModel


def parse_json(body: bytes) -> t.Any:
    """Strict JSON (no ``NaN``/``Infinity`` literals). :raises MalformedJSON: (400)."""
    if not body:
        raise MalformedJSON("request body is empty; send a JSON ride or array of rides")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"malformed JSON at line {exc.lineno} column {exc.colno}") from None


AfterPredict = t.Callable[[list[t.Any], list[float], str, list[str]], None]
"""The tail every prediction endpoint shares, called once the rides are predicted: with the rides,
their predictions, the model version and the warning codes (metrics, prediction log, shadow scoring;
:func:`ride_duration.web.api.after_predict`)."""

SLICE = 2000
"""Rides predicted between two pauses of a batch (~0.5 ms of the fast path)."""

Pause = t.Callable[[], None]
"""Gives the worker's other requests their turn (the gevent worker's fair turn); may be None."""
PAUSE_KEY = "ride_duration.pause"
"""environ key under which ride_duration.web.worker hands the app its ``Pause`` (absent under other workers)."""
PAUSE_AFTER_PARSE_BYTES = 64 * 1024
"""Bodies larger than this (~1,000 rides) give the worker a turn between parsing and validating."""


def predict_sliced(rides: list[t.Any], model: LoadedModel,
                   pause: Pause | None) -> tuple[list[float], list[tuple[int, str]]]:
    """``model.predict_with_warnings`` in slices of ``SLICE`` rides with a ``pause`` between them
    (same result: predictions and warnings are per ride), so a 10,000-ride batch does not hold the
    worker's single rides."""
    if pause is None or len(rides) <= SLICE:
        return model.predict_with_warnings(rides)
    durations: list[float] = []
    codes: list[tuple[int, str]] = []
    for start in range(0, len(rides), SLICE):
        if start:
            pause()
        part, warned = model.predict_with_warnings(rides[start:start + SLICE])
        durations += part
        codes += [(start + i, code) for i, code in warned]
    return durations, codes


def ride_warnings(codes: list[tuple[int, str]], is_batch: bool) -> list[dict[str, str]]:
    """``{"field", "reason", "message"}`` per ride with an implausible distance (field ``trip_distance``,
    or ``[i].trip_distance`` in a batch)."""
    return [{"field": f"[{i}].{NUMERICAL}" if is_batch else NUMERICAL, "reason": code,
             "message": WARNING_REASONS[code]} for i, code in codes]


def answer_body(rides: list[t.Any], durations: list[float], version: str, codes: list[tuple[int, str]],
                is_batch: bool) -> dict[str, t.Any]:
    """The answer every endpoint reshapes: ``duration`` (``durations``), ``model_version``, the ride id(s)
    and ``warnings``. ``ride_id`` is there when the ride had one; ``ride_ids`` (one per ride, null for a
    ride without) when any ride of the batch had one; ``warnings`` only when a ride has one."""
    body: dict[str, t.Any]
    if is_batch:
        body = {"durations": durations, "model_version": version}
        ids = [ride.get("ride_id") for ride in rides]
        if any(ride_id is not None for ride_id in ids):
            body["ride_ids"] = ids
    else:
        body = {"duration": durations[0], "model_version": version}
        if "ride_id" in rides[0]:
            body["ride_id"] = rides[0]["ride_id"]
    warnings = ride_warnings(codes, is_batch)
    if warnings:
        body["warnings"] = warnings
    return body


def predict_payload(payload: t.Any, model: LoadedModel, max_batch: int,
                    after: AfterPredict | None = None, pause: Pause | None = None) -> tuple[dict[str, t.Any], int]:
    """Validate and predict; returns the response body (:func:`answer_body`) and the number of rides.

    A batch pauses (``pause``) after validation and between prediction slices. A ride with an
    implausible distance is answered all the same, with a ``warnings`` entry. ``after`` is the
    endpoints' shared tail (metrics, prediction log, shadow), called before the body is built.
    """
    rides, is_batch = validate_rides(payload, max_batch)
    if is_batch and pause is not None and len(rides) > SLICE:
        pause()
    durations, codes = predict_sliced(rides, model, pause)
    if after is not None:
        after(rides, durations, model.version, [code for _, code in codes])
    return answer_body(rides, durations, model.version, codes, is_batch), len(rides)


def predict_body(body: bytes, model: LoadedModel, max_batch: int,
                 after: AfterPredict | None = None, pause: Pause | None = None) -> tuple[dict[str, t.Any], int]:
    """``predict_payload`` on a raw JSON body (a big body pauses after parsing too)."""
    payload = parse_json(body)
    if pause is not None and len(body) > PAUSE_AFTER_PARSE_BYTES:
        pause()
    return predict_payload(payload, model, max_batch, after, pause)


def model_card(model: LoadedModel) -> dict[str, t.Any]:
    """What ``GET /model`` shows: identity, provenance, features and metrics."""
    info = model.info
    meta = info.get("metadata") or {}
    card = {
        "name": info.get("name"),
        "version": model.version,
        "source": model.source,
        "sha256": info.get("sha256"),
        "features": meta.get("features", [*model.step.categorical, *model.step.numeric]),
        "feature_step": model.step.to_dict(),
        "n_features": len(getattr(model.dv, "feature_names_", []) or []),
        "regressor": type(model.regressor).__name__,
        "fast_path": model.fast is not None,
        "trained_at": meta.get("trained_at"),
        "train_data": meta.get("train_data"),
        "valid_data": meta.get("valid_data"),
        "metrics": meta.get("metrics"),
        "plausibility": meta.get("plausibility"),
        "sklearn_version": info.get("sklearn_version"),
        "trained_sklearn_version": info.get("trained_sklearn_version"),
    }
    for key in ("uri", "alias", "run_id", "registered_version", "loaded_at"):
        if key in info:
            card[key] = info[key]
    return card


def readiness(model: LoadedModel) -> dict[str, t.Any]:
    """The body of a 200 ``GET /ready``."""
    info = model.info
    body = {
        "status": "ready",
        "model_version": model.version,
        "source": model.source,
        "sha256": info.get("sha256"),
        "sklearn_version": info.get("sklearn_version"),
        "warnings": list(info.get("warnings", [])),
    }
    for key in ("name", "uri", "alias", "run_id", "fallback_reason"):
        if info.get(key) is not None:
            body[key] = info[key]
    return body
