"""The Kafka consumer loop: micro-batches, one predict per batch, at-least-once delivery.

Per batch (:meth:`StreamConsumer.handle`):

1. ``consume(num_messages=STREAM_BATCH_SIZE, timeout=STREAM_BATCH_WAIT)``;
2. validate every message and predict the valid ones in one call (:func:`.records.process`),
   with the model the holder has at that moment (a hot swap takes effect between batches);
3. produce the predictions and dead letters, then wait for the broker's acknowledgement of
   every one of them (``flush`` until none is outstanding, logging while the broker is away);
4. only then commit, synchronously, the offset after the last message of each partition;
5. with a shadow model (``SHADOW_MODEL_URI``), hand the committed batch's rides and predictions to
   the shadow scorer (:mod:`ride_duration.model.shadow`): a non-blocking ``put`` on its bounded queue.
   Its own thread scores them and publishes to ``--shadow-sink`` (:class:`ShadowSink`, a producer of its
   own that the batch's flush never waits for); a failing or slow shadow never holds a batch.

Auto-commit and auto offset store are off, so an offset is never committed before the outputs
of everything before it are acknowledged: a SIGKILL at any moment loses nothing, and the
messages after the last commit are processed again by whoever owns the partition next
(duplicates are possible; a prediction is keyed by ``ride_id`` and carries ``model_version``,
so consumers can de-duplicate). If an output is finally refused (``delivery.timeout.ms``
passes with the broker away, or the broker rejects it) the batch is not committed: the
consumer seeks back to the batch's first offsets and redoes it after a back-off (1 s doubling
up to ``STREAM_RETRY_MAX_SECONDS``), logging each attempt. SIGTERM/SIGINT finish the batch in
hand (its flush bounded by ``STREAM_SHUTDOWN_TIMEOUT``), commit, leave the group and exit 0; if
the bound passes first, exit 1 without committing (the batch is redelivered).

confluent-kafka is imported when the consumer is built, never at module import: the
``python -m ride_duration --help`` of every job imports this module.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import typing as t

from . import metrics, records
from .endpoints import consumer_config

if t.TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, Producer

    from ..config import Settings
    from ..model.holder import ModelHolder
    from ..model.shadow import ShadowResult, ShadowScorer
    from .endpoints import KafkaTopic

log = logging.getLogger(__name__)

FLUSH_STEP = 5.0
"""Seconds per ``flush`` call while outputs are outstanding (one log line per step)."""
LAG_EVERY = 5.0
BROKER_LOG_EVERY = 10.0


class ShutdownTimeout(Exception):
    """SIGTERM's flush bound passed with outputs still unacknowledged."""


class Delivery:
    """Counts delivery reports of one batch (librdkafka calls :meth:`report` from ``poll``/``flush``)."""

    def __init__(self) -> None:
        self.pending = 0
        self.failed: list[str] = []

    def report(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.failed.append(f"{msg.topic()}: {err.str()}")


class StreamConsumer:
    """Reads rides from ``source``, writes predictions to ``sink`` and bad messages to ``dead_letter``."""

    def __init__(self, settings: Settings, holder: ModelHolder, source: KafkaTopic, sink: KafkaTopic,
                 dead_letter: KafkaTopic, group: str, kafka_config: dict[str, str] | None = None,
                 shadow: ShadowScorer | None = None) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.holder = holder
        self.shadow = shadow
        self.source, self.sink, self.dead_letter = source, sink, dead_letter
        self.stop = threading.Event()
        self._last_broker_log = 0.0
        self._last_lag = 0.0
        self._backoff = 1.0
        extra = dict(kafka_config or {})
        self.consumer: Consumer = Consumer(consumer_config(
            source, group, self.on_error, extra, session_timeout_ms=settings.stream_session_timeout_ms))
        producers: dict[str, Producer] = {}
        for target in (sink, dead_letter):
            if target.brokers not in producers:
                producers[target.brokers] = Producer({
                    "bootstrap.servers": target.brokers, "acks": "all", "enable.idempotence": True,
                    "delivery.timeout.ms": settings.stream_delivery_timeout_ms, "linger.ms": 5,
                    "error_cb": self.on_error, **extra})
        self.producers = producers

    # ---- librdkafka callbacks ---------------------------------------------------------------------

    def on_error(self, err: KafkaError) -> None:
        """Client-level errors; librdkafka reconnects by itself with back-off (``reconnect.backoff.ms``)."""
        if err.fatal():
            log.error("fatal Kafka error, stopping: %s", err.str(), extra={"event": "kafka_fatal"})
            self.stop.set()
            return
        now = time.monotonic()
        if now - self._last_broker_log >= BROKER_LOG_EVERY:
            self._last_broker_log = now
            log.warning("Kafka broker unavailable, retrying with back-off: %s", err.str(),
                        extra={"event": "broker_unavailable", "error": err.name()})

    def on_assign(self, consumer: Consumer, partitions: list[t.Any]) -> None:
        log.info("partitions assigned: %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
                 extra={"event": "partitions_assigned", "partitions": [p.partition for p in partitions]})

    def on_revoke(self, consumer: Consumer, partitions: list[t.Any]) -> None:
        # Batches are finished (committed) before the next consume(), the only call that rebalances.
        log.info("partitions revoked: %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions),
                 extra={"event": "partitions_revoked", "partitions": [p.partition for p in partitions]})

    # ---- the loop -----------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: t.Any) -> None:
            log.info("%s: finishing the batch in hand, then exiting", signal.Signals(signum).name,
                     extra={"event": "stream_stopping"})
            self.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def run(self) -> int:
        """Consume until stopped; returns the exit code."""
        self.consumer.subscribe([self.source.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        log.info("consuming %s -> %s (dead letters %s)", self.source, self.sink, self.dead_letter,
                 extra={"event": "stream_started", "source": str(self.source), "sink": str(self.sink),
                        "dead_letter": str(self.dead_letter)})
        code = 0
        try:
            while not self.stop.is_set():
                messages = self.consumer.consume(self.settings.stream_batch_size, self.settings.stream_batch_wait)
                messages = [m for m in messages if self.usable(m)]
                if messages:
                    self.handle(messages)
                self.update_lag()
        except ShutdownTimeout as exc:
            log.error("%s; exiting without committing that batch (it will be redelivered)", exc,
                      extra={"event": "stream_shutdown_timeout"})
            code = 1
        finally:
            self.consumer.close()
        log.info("stream consumer stopped", extra={"event": "stream_stopped", "exit_code": code})
        return code

    def usable(self, message: Message) -> bool:
        """A real message; an error event (broker down, ...) is logged, rate-limited, and skipped."""
        err = message.error()
        if err is None:
            return True
        self.on_error(err)
        return False

    def handle(self, messages: list[Message]) -> bool:
        """One micro-batch; returns True when it was committed."""
        started = time.perf_counter()
        model = self.holder.require()
        sources = [{"topic": m.topic(), "partition": m.partition(), "offset": m.offset()} for m in messages]
        batch = records.process([m.value() for m in messages], [m.key() for m in messages], sources, model)
        delivery = Delivery()
        sink = self.producers[self.sink.brokers]
        for _, key, value in batch.predictions:
            self.produce(sink, self.sink.topic, key, value, delivery)
        dead = self.producers[self.dead_letter.brokers]
        for i, key, value, error in batch.dead_letters:
            self.produce(dead, self.dead_letter.topic, key, value, delivery)
            log.info("dead letter: %s at %s[%s]@%s", error.code, *sources[i].values(),
                     extra={"event": "dead_letter", "code": error.code, **sources[i]})
        self.await_delivery(delivery)
        if delivery.failed:
            self.redo(messages, delivery)
            return False
        self.commit(messages)
        if self.shadow is not None and batch.rides:
            self.shadow.submit(batch.rides, batch.durations, batch.model_version)
        self._backoff = 1.0
        metrics.CONSUMED.inc(len(messages))
        metrics.PREDICTIONS.inc(len(batch.predictions))
        metrics.DEAD_LETTERS.inc(len(batch.dead_letters))
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return True

    def produce(self, producer: Producer, topic: str, key: bytes, value: bytes, delivery: Delivery) -> None:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivery.report)
                delivery.pending += 1
                return
            except BufferError:  # local queue full: let librdkafka send some first
                producer.poll(0.1)

    def await_delivery(self, delivery: Delivery) -> None:
        """Flush until every output of the batch has its delivery report (success or failure)."""
        deadline: float | None = None
        while True:
            for producer in self.producers.values():
                producer.flush(FLUSH_STEP if delivery.pending else 0)
            if delivery.pending <= 0:
                return
            now = time.monotonic()
            if self.stop.is_set():
                deadline = deadline or now + self.settings.stream_shutdown_timeout
                if now >= deadline:
                    raise ShutdownTimeout(f"{delivery.pending} outputs still unacknowledged after "
                                          f"{self.settings.stream_shutdown_timeout:g}s")
            log.warning("waiting for the broker: %s outputs not acknowledged yet", delivery.pending,
                        extra={"event": "delivery_waiting", "pending": delivery.pending})

    def commit(self, messages: list[Message]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        last: dict[tuple[str, int], int] = {}
        for m in messages:
            last[(m.topic(), m.partition())] = max(last.get((m.topic(), m.partition()), -1), m.offset())
        offsets = [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # outputs are delivered: at worst they are produced again
            log.warning("offset commit failed (the batch may be processed again): %s", exc,
                        extra={"event": "commit_failed"})

    def redo(self, messages: list[Message], delivery: Delivery) -> None:
        """Outputs were refused: don't commit, seek back to the batch's start, back off, go again."""
        from confluent_kafka import KafkaException, TopicPartition

        metrics.DELIVERY_FAILURES.inc()
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            first.setdefault((m.topic(), m.partition()), m.offset())
        log.error("%s of %s outputs not delivered (%s); not committing, retrying the batch in %.0fs",
                  len(delivery.failed), len(messages), delivery.failed[0], self._backoff,
                  extra={"event": "delivery_failed", "failed": len(delivery.failed)})
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: the next owner starts at the commit
                log.warning("cannot seek %s[%s] back: %s", topic, partition, exc)
        if self.stop.wait(self._backoff):
            raise ShutdownTimeout("stopping while the broker refuses outputs")
        self._backoff = min(self._backoff * 2, self.settings.stream_retry_max_seconds)

    def update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < LAG_EVERY:
            return
        self._last_lag = now
        try:
            assignment = self.consumer.assignment()
            if not assignment:
                return
            lags = []
            for tp in self.consumer.position(assignment):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)  # from the last fetch
                if high < 0:  # nothing fetched yet: ask the broker (bounded; at most once per LAG_EVERY)
                    _, high = self.consumer.get_watermark_offsets(tp, timeout=1.0)
                if high >= 0 and tp.offset >= 0:
                    lags.append((tp.topic, tp.partition, high - tp.offset))
            metrics.set_lag(lags)
        except Exception as exc:  # noqa: BLE001 - a metric must never stop the consumer
            log.debug("lag update failed: %s", exc)


class ShadowSink:
    """The shadow scorer's sink for ``--shadow-sink``: its own idempotent producer, never flushed by a batch.

    Called from the scorer's thread. ``produce`` never waits: a full local queue raises (the scorer
    counts the rides as ``sink_failed``), and so does a delivery the broker finally refuses, counted
    when its report arrives (``poll(0)`` on every call serves the reports).
    """

    def __init__(self, settings: Settings, target: KafkaTopic, kafka_config: dict[str, str] | None = None) -> None:
        from confluent_kafka import Producer

        self.target = target
        self.producer = Producer({"bootstrap.servers": target.brokers, "acks": "all", "enable.idempotence": True,
                                  "delivery.timeout.ms": settings.stream_delivery_timeout_ms, "linger.ms": 20,
                                  **dict(kafka_config or {})})

    def __call__(self, result: ShadowResult) -> None:
        for ride, duration, served in zip(result.rides, result.predictions, result.served, strict=True):
            ride_id = ride["ride_id"]
            self.producer.produce(self.target.topic, records.shadow_record(
                ride_id, duration, result.version, served, result.served_version), records.key_of(ride_id),
                on_delivery=self.report)
        self.producer.poll(0)

    @staticmethod
    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            from ..model.shadow import metrics as shadow_metrics

            shadow_metrics().dropped.labels("sink_failed").inc()
            log.warning("shadow record not delivered: %s", err.str(), extra={"event": "shadow_sink_failed"})

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded): shadow records are best effort."""
        self.producer.flush(timeout)
