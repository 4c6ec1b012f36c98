"""The Kafka consumer end to end: a real broker (tansu) on loopback, the consumer as a real
``python -m ride_duration stream`` subprocess, topics with several partitions.

Predictions equal ``/predict``'s; bad messages become dead letters with their bytes, origin and
the API's error; SIGKILL + restart in a consumer group loses nothing; SIGTERM commits and exits
0; outputs the broker never acknowledges are never committed; a consumer started before its
broker waits (logging, not spinning) and then works.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

from ride_duration.model.loading import load_file
from ride_duration.schemas import RIDE_ID_PROBLEM
from tests.conftest import BUNDLED
from tests.stream.broker import StreamProcess, Tansu, TopicReader
from tests.support import free_port

pytestmark = pytest.mark.slow

PARTITIONS = 4


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Tansu]:
    with Tansu(tmp_path_factory.mktemp("tansu")) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> t.Any:
    return load_file(BUNDLED / "lin_reg.bin", None, source="bundled")


def topics(broker: Tansu, name: str) -> tuple[str, str, str]:
    names = (f"{name}-rides", f"{name}-predictions", f"{name}-dead")
    broker.create_topics(dict.fromkeys(names, PARTITIONS))
    return names


def rides(n: int, start: int = 0) -> list[dict[str, t.Any]]:
    return [{"ride_id": f"r{i}", "PULocationID": 1 + i % 260, "DOLocationID": 1 + (i * 7) % 260,
             "trip_distance": round((i % 97) * 0.37, 2), "VendorID": 2} for i in range(start, start + n)]


def encode(items: t.Iterable[dict[str, t.Any]]) -> list[bytes]:
    return [json.dumps(r).encode() for r in items]


def consumer(broker: Tansu, tmp_path: Path, names: tuple[str, str, str], group: str, *extra: str,
             log: str = "consumer.log", env: dict[str, str] | None = None) -> StreamProcess:
    source, sink, dead = names
    return StreamProcess(tmp_path / log, ["--source", broker.url(source), "--sink", broker.url(sink),
                                          "--dead-letter", broker.url(dead), "--group", group, *extra], env)


def ends(where: list[tuple[int, int]]) -> dict[int, int]:
    """Offset after the last message of each partition, from the producer's delivery reports."""
    out = dict.fromkeys(range(PARTITIONS), 0)
    for partition, offset in where:
        out[partition] = max(out[partition], offset + 1)
    return out


def by_ride(messages: list[dict[str, t.Any]]) -> dict[str, list[dict[str, t.Any]]]:
    out: dict[str, list[dict[str, t.Any]]] = {}
    for m in messages:
        out.setdefault(m["ride_id"], []).append(m)
    return out


BAD = {
    b"not json": ("malformed_json", None),
    b"": ("malformed_json", [{"field": "body", "problem": "must be a JSON object"}]),
    b"[1, 2]": ("invalid_input", [{"field": "body", "problem": "must be an object"}]),
    b'{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4}':
        ("invalid_input", [{"field": "ride_id", "problem": "field required"}]),
    b'{"ride_id": true, "PULocationID": 10, "DOLocationID": 50, "trip_distance": 4}':
        ("invalid_input", [{"field": "ride_id", "problem": RIDE_ID_PROBLEM}]),
    b'{"ride_id": 7, "PULocationID": 10, "DOLocationID": 50, "trip_distance": NaN}': ("malformed_json", None),
}
"""Messages that are not rides, with the error code and details the dead letter must carry."""
API_CHECKED = [  # bodies whose error must equal /predict's for the same ride (ride_id aside)
    {"ride_id": "a1", "PULocationID": "10", "DOLocationID": 50, "trip_distance": 4},
    {"ride_id": "a2", "PULocationID": 10, "DOLocationID": 50, "trip_distance": -1},
    {"ride_id": "a3", "PULocationID": 10.5, "DOLocationID": 1000},
]


def test_predictions_match_the_api_and_bad_messages_become_dead_letters(broker, reference, client, tmp_path):
    names = topics(broker, "basic")
    good = rides(3000)
    bad_bodies = list(BAD) + encode(API_CHECKED)
    bodies = encode(good[:1500]) + bad_bodies + encode(good[1500:])
    keys = [b"k%d" % i for i in range(len(bodies))]
    where = broker.produce(names[0], bodies, keys)
    predictions, dead = TopicReader(broker.bootstrap, names[1]), TopicReader(broker.bootstrap, names[2])
    proc = consumer(broker, tmp_path, names, "basic", "--batch-size", "400").start()
    try:
        predictions.until(lambda r: len(r.messages) >= len(good), 60, "every prediction")
        dead.until(lambda r: len(r.messages) >= len(bad_bodies), 20, "every dead letter")
        assert proc.terminate() == 0
    finally:
        proc.stop()
        predictions.close()
        dead.close()

    # every valid ride: exactly one prediction (clean run), the /predict value, keyed by ride_id
    out = by_ride(predictions.json())
    assert sorted(out) == sorted(r["ride_id"] for r in good)
    assert all(len(v) == 1 for v in out.values())
    expected = dict(zip((r["ride_id"] for r in good), reference.predict(good), strict=True))
    assert {rid: v[0]["duration"] for rid, v in out.items()} == expected
    assert {v[0]["model_version"] for v in out.values()} == {reference.version}
    assert all(m.key() == json.loads(m.value())["ride_id"].encode() for m in predictions.messages)
    sample = good[::300]
    response = client.post("/predict", json=sample)  # ride_id and VendorID are ignored there too
    assert response.status_code == 200
    assert response.get_json()["durations"] == [expected[r["ride_id"]] for r in sample]

    # every bad message: its exact bytes, key, origin, and the API's error document
    letters = {base64.b64decode(d["original_base64"]): (d, m) for d, m in
               zip(dead.json(), dead.messages, strict=True)}
    assert sorted(letters) == sorted(bad_bodies)
    for body in bad_bodies:
        letter, message = letters[body]
        i = bodies.index(body)
        assert letter["source"] == {"topic": names[0], "partition": where[i][0], "offset": where[i][1]}
        assert message.key() == keys[i]
        if body in BAD:
            code, details = BAD[body]
            assert letter["error"]["code"] == code
            if details is not None:
                assert letter["error"]["details"] == details
    for ride in API_CHECKED:
        letter = letters[json.dumps(ride).encode()][0]
        api_error = client.post("/predict", json=ride).get_json()["error"]
        assert letter["error"]["code"] == api_error["code"] == "invalid_input"
        assert letter["error"]["details"] == api_error["details"]

    # SIGTERM committed everything: the group's offsets are the topic's ends
    assert broker.committed(names[0], "basic") == ends(where)
    assert proc.events("stream_stopped")[-1]["exit_code"] == 0


def test_sigkill_in_a_consumer_group_loses_no_ride(broker, reference, tmp_path):
    """Two members share 4 partitions; one is SIGKILLed mid-stream and restarted; every ride arrives."""
    names = topics(broker, "kill")
    first, second = rides(4000), rides(4000, start=4000)
    where = broker.produce(names[0], encode(first))
    # librdkafka's group debug log in each member's log file: a stalled group shows in explain() below
    small = ("--batch-size", "50", "--kafka-config", "debug=cgrp")
    a = consumer(broker, tmp_path, names, "kill", *small, log="a.log").start()
    b = consumer(broker, tmp_path, names, "kill", *small, log="b.log").start()
    reader = TopicReader(broker.bootstrap, names[1])
    try:
        a.wait_event("partitions_assigned")
        b.wait_event("partitions_assigned")
        reader.until(lambda r: len(r.messages) >= 500, 60, "the stream to flow")
        orphaned = set(a.events("partitions_assigned")[-1]["partitions"])  # what a owned when it died
        b_before = len(b.events("partitions_assigned"))
        killed = a
        killed.kill()  # mid-stream: batches produced but not committed are redone by the next owner
        where += broker.produce(names[0], encode(second))
        a = consumer(broker, tmp_path, names, "kill", *small, log="a2.log").start()  # same group
        want = {r["ride_id"] for r in first + second}
        source = dict(zip((r["ride_id"] for r in first + second), where, strict=True))

        def explain() -> str:  # a timeout must say what was missing where, and what the group did
            missing = want - {m["ride_id"] for m in reader.json()}
            per_partition = {p: sum(source[rid][0] == p for rid in missing) for p in range(PARTITIONS)}
            return "\n".join([f"{len(missing)} rides missing, per source partition {per_partition}",
                              f"committed {broker.committed(names[0], 'kill')}, ends {ends(where)}",
                              *(proc.story() for proc in (killed, b, a))])

        reader.until(lambda r: want <= {m["ride_id"] for m in r.json()}, 90, "every ride after the restart", explain)
        # b may have done it all while the restarted member was still importing: a SIGTERM before its
        # handlers exist kills it (-15), which says nothing about the consumer
        a.wait_event("stream_started")
        assert a.terminate() == 0
        assert b.terminate() == 0
    finally:
        a.stop()
        b.stop()
        reader.close()
    out = by_ride(reader.json())
    assert set(out) == want  # nothing lost, nothing invented; duplicates allowed (at-least-once)
    expected = dict(zip((r["ride_id"] for r in first + second), reference.predict(first + second), strict=True))
    assert all(m["duration"] == expected[rid] for rid, ms in out.items() for m in ms)
    members = {p for log in ("a.log", "b.log", "a2.log")
               for e in StreamProcess(tmp_path / log, []).events("partitions_assigned") for p in e["partitions"]}
    assert members == set(range(PARTITIONS))
    # the dead member's partitions were handed on after the kill, to b in a rebalance or to the restarted
    # member (which of the two is the group coordinator's choice, not ours)
    taken = {p for e in b.events("partitions_assigned")[b_before:] + StreamProcess(tmp_path / "a2.log", []).events(
        "partitions_assigned") for p in e["partitions"]}
    assert orphaned and orphaned <= taken
    assert broker.committed(names[0], "kill") == ends(where)


def test_undelivered_outputs_are_never_committed(broker, tmp_path):
    """The sink's broker is down: delivery fails, the batch is redone with back-off, nothing is committed."""
    names = topics(broker, "nosink")
    broker.produce(names[0], encode(rides(20)))
    dead_sink = f"kafka://127.0.0.1:{free_port()}/{names[1]}"
    proc = StreamProcess(tmp_path / "c.log", ["--source", broker.url(names[0]), "--sink", dead_sink,
                                              "--dead-letter", broker.url(names[2]), "--group", "nosink"],
                         env={"STREAM_DELIVERY_TIMEOUT_MS": "1500"}).start()
    try:
        failures = proc.wait_event("delivery_failed", count=2)
        assert "not committing" in failures[0]["message"]
        assert proc.events("broker_unavailable")
        assert proc.terminate() == 1  # stopped while the outputs were still refused
    finally:
        proc.stop()
    assert all(offset < 0 for offset in broker.committed(names[0], "nosink").values())


def test_a_consumer_waits_for_its_broker_without_spinning(tmp_path, reference):
    port = free_port()
    late = Tansu(tmp_path / "late", port=port)
    names = ("late-rides", "late-predictions", "late-dead")
    proc = consumer(late, tmp_path, names, "late").start()
    try:
        proc.wait_event("broker_unavailable")
        # "not spinning", measured against a process that does spin, side by side on this (shared,
        # maybe loaded) box: the window ends when the spinner has burnt one CPU second, not after
        # some wall time; a waiting consumer uses a small fraction of what the spinner got
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            consumer_before, spinner_before = cpu_seconds(proc.proc.pid), cpu_seconds(spinner.pid)
            deadline = time.monotonic() + 60  # a liveness bound
            while cpu_seconds(spinner.pid) - spinner_before < 1.0 and time.monotonic() < deadline:
                time.sleep(0.1)
            spun = cpu_seconds(spinner.pid) - spinner_before
            used = cpu_seconds(proc.proc.pid) - consumer_before
        finally:
            spinner.kill()
            spinner.wait()
        assert spun >= 1.0, f"the spinner got only {spun:.2f} CPU s in 60 s"
        assert used < 0.25 * spun, f"the consumer used {used:.2f} CPU s while a spinning process used {spun:.2f}"
        late.start()
        late.create_topics(dict.fromkeys(names, 2))
        late.produce(names[0], encode(rides(100)))
        reader = TopicReader(late.bootstrap, names[1])
        try:
            reader.until(lambda r: len(r.messages) >= 100, 60, "predictions once the broker is up")
        finally:
            reader.close()
        assert proc.terminate() == 0
    finally:
        proc.stop()
        late.stop()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
