"""The message contract and the small pure pieces of the stream room (no broker needed)."""

from __future__ import annotations

import base64
import json
import time

import orjson
import pytest

from ride_duration.errors import InvalidInput, MalformedJSON
from ride_duration.model.loading import load_file
from ride_duration.schemas import RIDE_ID_PROBLEM
from ride_duration.stream import kinesis_lambda, records
from ride_duration.stream.endpoints import kafka_topic
from tests.conftest import BUNDLED

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}


@pytest.mark.parametrize("ride_id", ["r1", 7, "x" * 64, 0, 2 ** 63 - 1])
def test_valid_ride_ids(ride_id):
    parsed = records.parse(json.dumps({"ride_id": ride_id, **RIDE, "VendorID": 2}).encode())
    assert parsed.ride_id == ride_id and parsed.ride == RIDE


@pytest.mark.parametrize("ride_id", [True, 1.5, None, "", "x" * 65, 2 ** 63])
def test_bad_ride_ids_are_named(ride_id):
    problem = RIDE_ID_PROBLEM  # the API's one rule (schemas.RideId)
    with pytest.raises(InvalidInput) as info:
        records.parse(json.dumps({"ride_id": ride_id, **RIDE}).encode())
    assert info.value.details == [{"field": "ride_id", "problem": problem}]


def test_ride_id_and_ride_problems_are_reported_together():
    with pytest.raises(InvalidInput) as info:
        records.parse(b'{"PULocationID": 0, "DOLocationID": 50, "trip_distance": 1}')
    assert [d["field"] for d in info.value.details] == ["ride_id", "PULocationID"]


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": NaN}', b"\xff\xfe"])
def test_not_json(body):
    with pytest.raises(MalformedJSON):
        records.parse(body)


def test_one_predict_call_per_batch_in_message_order():
    model = load_file(BUNDLED / "lin_reg.bin", None, source="bundled")
    calls = []

    class Counting:
        version = model.version

        def predict(self, rides):
            calls.append(len(rides))
            return model.predict(rides)

    values = [json.dumps({"ride_id": i, **RIDE}).encode() for i in range(5)] + [b"bad"]
    batch = records.process(values, [None] * 6, [{"offset": i} for i in range(6)], Counting())
    assert calls == [5]
    assert [orjson.loads(v)["ride_id"] for _, _, v in batch.predictions] == list(range(5))
    (index, _, letter, error), = batch.dead_letters
    assert index == 5 and error.code == "malformed_json"
    assert base64.b64decode(orjson.loads(letter)["original_base64"]) == b"bad"
    assert orjson.loads(letter)["source"] == {"offset": 5}


def test_kafka_urls():
    assert kafka_topic("kafka://a:9092,b:9093/rides").brokers == "a:9092,b:9093"
    assert kafka_topic("kafka://a:9092/rides").topic == "rides"
    for bad in ("a:9092/rides", "kafka://a/rides", "kafka://a:9092/", "kafka://a:9092/x y", "http://a:1/t"):
        with pytest.raises(ValueError):
            kafka_topic(bad)


def test_lambda_refresh_checks_the_registry_only_when_the_poll_interval_passed():
    """A Lambda container has no watcher thread: the handler polls at the start of an invocation."""

    class Watcher:  # pure unit test: stands in for registry.watch.Watcher's check bookkeeping
        poll_seconds = 30.0
        last_check = time.time()
        checks = 0

        def check(self):
            self.checks += 1
            self.last_check = time.time()

    handler = object.__new__(kinesis_lambda.KinesisHandler)
    handler.watcher = Watcher()
    handler.refresh()
    assert handler.watcher.checks == 0
    handler.watcher.last_check -= 31
    handler.refresh()
    assert handler.watcher.checks == 1
