"""Read a Kafka topic once, from the beginning to its end: a finite data set out of a stream.

For jobs that need a topic's records as a data set (``evaluate`` reads the predictions topics):
every partition that holds messages (its end offset at the start above its first) is *assigned*
(no group membership, so a running consumer group is never rebalanced) from its first offset, nothing
is committed, and a partition is done when the consumer reaches its end (librdkafka's
partition-EOF event: the fetch position at the broker's high watermark, after at least the end
offset taken at the start). A message produced during the read may be included when it lands before
the reader gets there; the read does not chase a partition beyond the end it finds. The end is
judged by the fetch's high watermark, not by the end offsets listed at the start alone: tansu (the
test broker) lists the offset after the last record *batch*'s first record there, not after its last.
The connection settings are the stream consumer's (``bootstrap.servers`` from the ``kafka://``
address, extra librdkafka settings such as ``security.protocol`` passed through).

confluent-kafka is imported when a topic is read, never at module import.
"""

from __future__ import annotations

import logging
import time
import typing as t

from ..errors import BadInput, JobError
from .endpoints import consumer_config

if t.TYPE_CHECKING:
    from .endpoints import KafkaTopic

log = logging.getLogger(__name__)


class Message(t.NamedTuple):
    value: bytes | None
    timestamp_ms: int | None
    """The message's timestamp (producer's create time or the broker's log-append time), None if it has none."""
    partition: int
    offset: int


class LibrdkafkaLog:
    """librdkafka's own log lines (connection refused, retries…) at DEBUG: the job reports the outcome once."""

    def log(self, level: int, message: str, *args: t.Any) -> None:
        log.debug(message, *args)


def read_topic(topic: KafkaTopic, group: str, timeout: float,
               kafka_config: t.Mapping[str, str] | None = None) -> list[Message]:
    """Every message of ``topic`` from the beginning to the end (module docstring), in (partition, offset) order.

    :param group: ``group.id`` (librdkafka needs one; nothing is committed under it).
    :param timeout: seconds for the broker's metadata and end offsets, and the longest wait without a
        new message while some partition has not reached its end.
    :raises BadInput: the topic does not exist (exit 2: the same run fails the same way).
    :raises JobError: the broker cannot be reached, or stops delivering before the end (exit 1).
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    errors: list[str] = []
    consumer = Consumer(consumer_config(topic, group, lambda err: errors.append(err.str()), kafka_config,
                                        enable_partition_eof=True, logger=LibrdkafkaLog()))
    try:
        try:
            meta = consumer.list_topics(topic.topic, timeout=timeout)
        except KafkaException as exc:
            raise JobError(f"cannot reach the broker of {topic}: {exc.args[0].str() if exc.args else exc}"
                           f"{'; ' + errors[-1] if errors else ''}") from None
        found = meta.topics.get(topic.topic)
        if found is None or (found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise BadInput(f"{topic}: no such topic")
        if found.error is not None:
            raise JobError(f"{topic}: {found.error.str()}")
        ends: dict[int, int] = {}
        starts: list[t.Any] = []
        for partition in sorted(found.partitions):
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic.topic, partition), timeout=timeout)
            except KafkaException as exc:
                raise JobError(f"{topic}: cannot get the end offsets of partition {partition}: {exc}") from None
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic.topic, partition, low))
        return consume(consumer, topic, starts, ends, timeout, errors)
    finally:
        consumer.close()


def consume(consumer: t.Any, topic: KafkaTopic, starts: list[t.Any], ends: dict[int, int], timeout: float,
            errors: list[str]) -> list[Message]:
    """Consume the assigned partitions until each reaches its end offset (see :func:`read_topic`)."""
    from confluent_kafka import KafkaError

    messages: list[Message] = []
    if not starts:
        return messages
    consumer.assign(starts)
    pending = dict(ends)
    last_progress = time.monotonic()
    while pending:
        batch = consumer.consume(10_000, 0.5)
        for msg in batch:
            error = msg.error()
            if error is None:
                if msg.partition() not in pending:  # produced after the reader reached that partition's end
                    continue
                kind, stamp = msg.timestamp()
                messages.append(Message(msg.value(), stamp if kind else None, msg.partition(), msg.offset()))
            elif error.code() == KafkaError._PARTITION_EOF:
                if msg.partition() in pending and msg.offset() >= ends[msg.partition()]:
                    del pending[msg.partition()]
            else:
                errors.append(error.str())
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > timeout:
            missing = ", ".join(f"{p} (end {ends[p]})" for p in sorted(pending))
            raise JobError(f"{topic}: no message for {timeout:g} s before the end of partition(s) {missing}"
                           f"{'; ' + errors[-1] if errors else ''}")
    messages.sort(key=lambda m: (m.partition, m.offset))
    log.debug("read %d messages from %s", len(messages), topic)
    return messages
