"""AWS Lambda handler for Kinesis events, the course's streaming deployment.

    lambda_handler(event, context) -> {"batchItemFailures": [{"itemIdentifier": sequenceNumber}, ...]}

Each Kinesis record's ``data`` (base64) is one JSON ride with a ``ride_id``, exactly as for the
Kafka consumer (:mod:`.records`): valid rides are predicted in one vectorised call and
``put_records`` to ``PREDICTIONS_STREAM_NAME`` as ``{"ride_id", "duration", "model_version"}``
with partition key ``ride_id``. A record that is not a valid ride (or not base64) becomes a
dead letter (``{"error", "source": {stream_arn, sequence_number, partition_key},
"original_base64"}``) on ``DEAD_LETTER_STREAM_NAME`` with the record's own partition key; without
that stream it is logged (error and source, not the payload) and not retried, since a retry
cannot make it valid.

Partial batch failures: entries ``put_records`` refuses are retried (3 attempts, back-off);
the sequence numbers of records whose output still was not written are returned in
``batchItemFailures``, so with ``FunctionResponseTypes: [ReportBatchItemFailures]`` on the event
source mapping Lambda retries from the first of them (earlier records' outputs may then be
written again: at-least-once, as with Kafka). With no model at all the handler raises and
Lambda retries the whole batch.

Model: as the service chooses it (:func:`ride_duration.startup.follow_model`), loaded once per
container (cold start). With ``MLFLOW_TRACKING_URI`` the alias is re-resolved at the start of
an invocation when ``MODEL_POLL_SECONDS`` have passed since the last check (no thread: Lambda
freezes the container between invocations), and a new version is swapped in after the same
checks. AWS endpoint, region and credentials come from boto3's own environment
(``AWS_REGION``, ``AWS_ENDPOINT_URL_KINESIS``/``AWS_ENDPOINT_URL``, the execution role).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import typing as t

from ..config import Settings
from ..errors import MalformedJSON
from ..logs import JsonFormatter, setup_logging
from ..model.holder import ModelHolder
from ..startup import follow_model
from . import records

if t.TYPE_CHECKING:
    from ..registry.watch import Watcher

log = logging.getLogger(__name__)

PUT_LIMIT = 500
"""Most records per ``put_records`` call (the Kinesis API limit)."""
PUT_ATTEMPTS = 3


class KinesisHandler:
    """The handler with its model and Kinesis client; one per Lambda container."""

    def __init__(self, settings: Settings, client: t.Any = None) -> None:
        if not settings.predictions_stream_name:
            raise RuntimeError("PREDICTIONS_STREAM_NAME is not set: the handler has nowhere to write predictions")
        self.settings = settings
        self.holder = ModelHolder()
        self.watcher: Watcher | None = follow_model(settings, self.holder, background=False)
        self._client = client

    @property
    def client(self) -> t.Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("kinesis", config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=10))
        return self._client

    def refresh(self) -> None:
        """Follow the alias between invocations (same checks and swap as the service's watcher)."""
        watcher = self.watcher
        if watcher is None or watcher.poll_seconds <= 0:
            return
        if watcher.last_check is None or time.time() - watcher.last_check >= watcher.poll_seconds:
            watcher.check()

    def __call__(self, event: dict[str, t.Any], context: t.Any = None) -> dict[str, t.Any]:
        self.refresh()
        model = self.holder.require()  # none at all: raise, Lambda retries the batch
        items = event.get("Records") or []
        sequence = [r.get("kinesis", {}).get("sequenceNumber") for r in items]
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        sources: list[dict[str, t.Any]] = []
        undecodable: list[tuple[int, bytes]] = []
        for i, item in enumerate(items):
            kinesis = item.get("kinesis", {})
            partition_key = kinesis.get("partitionKey")
            sources.append({"stream_arn": item.get("eventSourceARN"), "sequence_number": sequence[i],
                            "partition_key": partition_key})
            keys.append(partition_key.encode() if partition_key else None)
            raw = kinesis.get("data") or ""
            try:
                values.append(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError):
                values.append(None)
                undecodable.append((i, raw.encode() if isinstance(raw, str) else bytes(raw)))
        decodable = [i for i in range(len(items)) if values[i] is not None]
        batch = records.process([values[i] for i in decodable], [keys[i] for i in decodable],
                                [sources[i] for i in decodable], model)
        outputs = [(decodable[j], key, value) for j, key, value in batch.predictions]
        dead = [(decodable[j], key, value, error) for j, key, value, error in batch.dead_letters]
        for i, raw in undecodable:
            error = MalformedJSON("record data is not valid base64",
                                  [{"field": "data", "problem": "must be base64"}])
            dead.append((i, keys[i], records.dead_letter(raw, error, sources[i]), error))
        failed = self.put(self.settings.predictions_stream_name, outputs)
        if self.settings.dead_letter_stream_name:
            failed |= self.put(self.settings.dead_letter_stream_name, [(i, k, v) for i, k, v, _ in dead])
        for i, _, _, error in dead:
            log.warning("dead letter: %s at %s", error.code, sequence[i],
                        extra={"event": "dead_letter", "code": error.code, **sources[i],
                               "written": bool(self.settings.dead_letter_stream_name) and i not in failed})
        log.info("kinesis batch: %s records, %s predictions, %s dead letters, %s failed", len(items),
                 len(outputs), len(dead), len(failed),
                 extra={"event": "kinesis_batch", "records": len(items), "predictions": len(outputs),
                        "dead_letters": len(dead), "failed": len(failed), "model_version": model.version})
        return {"batchItemFailures": [{"itemIdentifier": sequence[i]} for i in sorted(failed)]}

    def put(self, stream: str, outputs: list[tuple[int, bytes | None, bytes]]) -> set[int]:
        """``put_records`` in chunks, retrying refused entries; returns the source indices not written."""
        failed: set[int] = set()
        for start in range(0, len(outputs), PUT_LIMIT):
            pending = outputs[start:start + PUT_LIMIT]
            for attempt in range(PUT_ATTEMPTS):
                if attempt:
                    time.sleep(0.1 * 2 ** attempt)
                entries = [{"Data": value, "PartitionKey": (key or b"none").decode(errors="replace")[:256]}
                           for _, key, value in pending]
                try:
                    answer = self.client.put_records(StreamName=stream, Records=entries)
                except Exception as exc:  # noqa: BLE001 - botocore raises many types; all mean "not written"
                    log.warning("put_records to %s failed (attempt %s/%s): %s", stream, attempt + 1, PUT_ATTEMPTS,
                                exc, extra={"event": "put_records_failed", "stream": stream})
                    continue
                pending = [out for out, result in zip(pending, answer["Records"], strict=True)
                           if result.get("ErrorCode")]
                if not pending:
                    break
            failed |= {i for i, _, _ in pending}
        return failed


_handler: KinesisHandler | None = None


def json_lines(level: str) -> None:
    """JSON log lines; the Lambda runtime's own root handler (if any) is reformatted, not doubled."""
    root = logging.getLogger()
    if not root.handlers:
        setup_logging(level)
        return
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    root.setLevel(level.upper())


def lambda_handler(event: dict[str, t.Any], context: t.Any) -> dict[str, t.Any]:
    """The Lambda entry point (``ride_duration.stream.kinesis_lambda.lambda_handler``)."""
    global _handler
    if _handler is None:  # cold start: settings, logging and the model, once per container
        settings = Settings()
        json_lines(settings.log_level)
        _handler = KinesisHandler(settings)
    return _handler(event, context)
