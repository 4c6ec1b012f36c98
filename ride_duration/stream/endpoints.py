"""``kafka://HOST:PORT[,HOST:PORT...]/TOPIC`` addresses, as the ``stream`` CLI takes them, and the consumer
settings every reader of such a topic starts from (the ``stream`` consumer, ``evaluate``'s topic reader)."""

from __future__ import annotations

import dataclasses
import re
import typing as t

_KAFKA = re.compile(r"^kafka://(?P<brokers>[^/]+)/(?P<topic>[A-Za-z0-9._-]{1,249})$")
_BROKER = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d{1,5}$")


@dataclasses.dataclass(frozen=True)
class KafkaTopic:
    brokers: str
    """``bootstrap.servers``: comma-separated ``host:port``."""
    topic: str

    def __str__(self) -> str:
        return f"kafka://{self.brokers}/{self.topic}"


def kafka_topic(text: str) -> KafkaTopic:
    """Parse ``kafka://h1:9092,h2:9092/rides``. :raises ValueError: with what is wrong."""
    match = _KAFKA.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
    brokers = [b.strip() for b in match["brokers"].split(",")]
    bad = [b for b in brokers if not _BROKER.match(b)]
    if bad:
        raise ValueError(f"broker {bad[0]!r} in {text!r} is not HOST:PORT")
    return KafkaTopic(",".join(brokers), match["topic"])


def consumer_config(topic: KafkaTopic, group: str, on_error: t.Callable[[t.Any], None],
                    extra: t.Mapping[str, t.Any] | None = None, **settings: t.Any) -> dict[str, t.Any]:
    """librdkafka consumer settings for ``topic``: offsets stored and committed only by hand, a new group
    starting from the earliest offset, fetches answered within 100 ms; then ``settings`` (dotted librdkafka
    names, as keyword arguments with ``_`` for ``.``), then the user's ``extra`` (``--kafka-config``) on top."""
    return {"bootstrap.servers": topic.brokers, "group.id": group,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100, "enable.partition.eof": False, "error_cb": on_error,
            **{name.replace("_", "."): value for name, value in settings.items()}, **(extra or {})}
