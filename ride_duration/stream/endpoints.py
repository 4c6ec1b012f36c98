"""``kafka://HOST:PORT[,HOST:PORT...]/TOPIC`` addresses, as the ``stream`` CLI takes them."""

from __future__ import annotations

import dataclasses
import re

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
