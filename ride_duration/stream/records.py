"""One stream message in, a prediction or a dead letter out: shared by Kafka and Kinesis.

A message is one JSON ride: the ``POST /predict`` ride shape plus a ``ride_id``, required here
(the API's rule, :data:`ride_duration.schemas.RideId`: a non-empty string of at most 64
characters, or an integer within int64); other fields are ignored. Validation is
:func:`ride_duration.schemas.validate_rides`, so a message is refused for exactly the reasons
the API answers 422, with the same ``{code, message, details}``.

* Prediction: ``{"ride_id", "duration", "model_version"}``, keyed by ``ride_id``.
* Shadow prediction (``--shadow-sink``, with a shadow model): ``{"ride_id", "role": "shadow",
  "duration", "model_version", "served_duration", "served_model_version"}``, keyed by ``ride_id``.
* Dead letter: ``{"error": {"code", "message", "details"?}, "source": {...}, "original_base64"}``
  keyed like the original; ``source`` says where the message came from (Kafka: ``topic``,
  ``partition``, ``offset``; Kinesis: ``stream_arn``, ``sequence_number``,
  ``partition_key``) and ``original_base64`` holds its bytes exactly.
"""

from __future__ import annotations

import base64
import dataclasses
import typing as t

import orjson

from ..errors import InvalidInput, MalformedJSON, ServiceError
from ..schemas import validate_rides

if t.TYPE_CHECKING:
    from ..model.predictor import LoadedModel

@dataclasses.dataclass
class Parsed:
    """A message that passed validation: its ride id and the ride the model sees."""

    ride_id: str | int
    ride: dict[str, t.Any]


def parse(value: bytes | None) -> Parsed:
    """Validate one message body.

    :raises MalformedJSON: not JSON (or empty).
    :raises InvalidInput: not one ride object, or a bad field (same details as ``/predict``).
    """
    if not value:
        raise MalformedJSON("empty message: expected one JSON ride object",
                            [{"field": "body", "problem": "must be a JSON object"}])
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise MalformedJSON("message is not valid JSON (UTF-8, no NaN/Infinity literals)") from None
    if not isinstance(payload, dict):
        raise InvalidInput("message must be one ride object",
                           [{"field": "body", "problem": "must be an object"}])
    problems = [] if "ride_id" in payload else [{"field": "ride_id", "problem": "field required"}]
    try:
        rides, _ = validate_rides(payload, max_batch=1)
    except InvalidInput as exc:
        problems += exc.details or []
    if problems:
        raise InvalidInput(f"{len(problems)} invalid field(s)", problems)
    ride = dict(rides[0])
    return Parsed(ride.pop("ride_id"), ride)


def key_of(ride_id: str | int) -> bytes:
    return str(ride_id).encode()


def prediction(ride_id: str | int, duration: float, model_version: str) -> bytes:
    return orjson.dumps({"ride_id": ride_id, "duration": duration, "model_version": model_version})


def dead_letter(value: bytes | None, error: ServiceError, source: dict[str, t.Any]) -> bytes:
    body = {**error.to_dict(), "source": source,
            "original_base64": base64.b64encode(value or b"").decode("ascii")}
    return orjson.dumps(body)


@dataclasses.dataclass
class Batch:
    """The outcome of one micro-batch, in message order: ``(index, key, value)`` per output."""

    model_version: str
    predictions: list[tuple[int, bytes, bytes]]
    dead_letters: list[tuple[int, bytes | None, bytes, ServiceError]]
    rides: list[dict[str, t.Any]] = dataclasses.field(default_factory=list)
    """The predicted rides (with their ``ride_id``), in the order of ``predictions``: for the shadow."""
    durations: list[float] = dataclasses.field(default_factory=list)


def process(values: t.Sequence[bytes | None], keys: t.Sequence[bytes | None],
            sources: t.Sequence[dict[str, t.Any]], model: LoadedModel) -> Batch:
    """Validate every message and predict the valid ones in ONE ``model.predict`` call."""
    parsed: list[tuple[int, Parsed]] = []
    dead: list[tuple[int, bytes | None, bytes, ServiceError]] = []
    for i, value in enumerate(values):
        try:
            parsed.append((i, parse(value)))
        except ServiceError as exc:
            dead.append((i, keys[i], dead_letter(value, exc, sources[i]), exc))
    durations = model.predict([p.ride for _, p in parsed]) if parsed else []
    out = [(i, key_of(p.ride_id), prediction(p.ride_id, d, model.version))
           for (i, p), d in zip(parsed, durations, strict=True)]
    return Batch(model.version, out, dead, [{**p.ride, "ride_id": p.ride_id} for _, p in parsed], list(durations))


def shadow_record(ride_id: str | int, duration: float, version: str, served: float, served_version: str) -> bytes:
    """A shadow prediction for ``--shadow-sink``; the served one beside it."""
    return orjson.dumps({"ride_id": ride_id, "role": "shadow", "duration": duration, "model_version": version,
                         "served_duration": served, "served_model_version": served_version})
