"""The Kinesis Lambda handler against a real Kinesis API (moto server on loopback): Kinesis-shaped
events in, predictions and dead letters read back with ``get_records``, partial batch failures
reported by sequence number."""

from __future__ import annotations

import base64
import json
import typing as t

import pytest

from ride_duration.config import Settings
from ride_duration.model.loading import load_file
from ride_duration.stream import kinesis_lambda
from tests.conftest import BUNDLED
from tests.support import free_port

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/ride_events"


@pytest.fixture(scope="module")
def moto_endpoint() -> t.Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> t.Any:
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return boto3.client("kinesis")


def create_stream(client: t.Any, name: str) -> str:
    client.create_stream(StreamName=name, ShardCount=1)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return name


def read_stream(client: t.Any, name: str) -> list[dict[str, t.Any]]:
    shard = client.describe_stream(StreamName=name)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return client.get_records(ShardIterator=iterator["ShardIterator"], Limit=10_000)["Records"]


def event(bodies: list[bytes | str]) -> dict[str, t.Any]:
    """A Kinesis event as Lambda delivers it (``data`` base64; a str is sent as given)."""
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": f"pk{i}",
                    "sequenceNumber": f"4959{i:040d}", "approximateArrivalTimestamp": 1700000000.0 + i,
                    "data": body if isinstance(body, str) else base64.b64encode(body).decode()},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"shardId-000000000000:4959{i:040d}",
        "eventName": "aws:kinesis:record", "awsRegion": "us-east-1", "eventSourceARN": ARN,
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-kinesis-role"} for i, body in enumerate(bodies)]}


RIDES = [{"ride_id": 100 + i, "PULocationID": 1 + i * 11 % 260, "DOLocationID": 1 + i * 5 % 260,
          "trip_distance": i * 0.75} for i in range(40)]
BAD = [b'{"ride_id": 1, "PULocationID": "x", "DOLocationID": 5, "trip_distance": 1}', b"nope", "!!not base64!!"]


def test_predictions_and_dead_letters_through_kinesis(aws, monkeypatch):
    out, dead = create_stream(aws, "ride_predictions"), create_stream(aws, "ride_dead_letters")
    monkeypatch.setenv("PREDICTIONS_STREAM_NAME", out)
    monkeypatch.setenv("DEAD_LETTER_STREAM_NAME", dead)
    monkeypatch.setattr(kinesis_lambda, "_handler", None)  # a cold start with this environment
    bodies: list[bytes | str] = [json.dumps(r).encode() for r in RIDES[:20]] + BAD + [
        json.dumps(r).encode() for r in RIDES[20:]]
    answer = kinesis_lambda.lambda_handler(event(bodies), None)
    assert answer == {"batchItemFailures": []}

    reference = load_file(BUNDLED / "lin_reg.bin", None, source="bundled")
    written = read_stream(aws, out)
    got = [json.loads(r["Data"]) for r in written]
    assert got == [{"ride_id": r["ride_id"], "duration": d, "model_version": reference.version}
                   for r, d in zip(RIDES, reference.predict(RIDES), strict=True)]
    assert [r["PartitionKey"] for r in written] == [str(r["ride_id"]) for r in RIDES]

    letters = [json.loads(r["Data"]) for r in read_stream(aws, dead)]
    assert [base64.b64decode(d["original_base64"]) for d in letters] == [BAD[0], BAD[1], BAD[2].encode()]
    assert [d["error"]["code"] for d in letters] == ["invalid_input", "malformed_json", "malformed_json"]
    assert letters[0]["error"]["details"] == [{"field": "PULocationID", "problem":
                                               "must be an integer zone ID from 1 to 999"}]
    assert letters[0]["source"] == {"stream_arn": ARN, "sequence_number": f"4959{20:040d}", "partition_key": "pk20"}
    assert letters[2]["error"]["details"] == [{"field": "data", "problem": "must be base64"}]


def test_records_whose_output_cannot_be_written_are_reported(aws):
    """The dead-letter stream does not exist: predictions are written, the bad records are failures."""
    out = create_stream(aws, "ride_predictions_2")
    handler = kinesis_lambda.KinesisHandler(Settings(predictions_stream_name=out,
                                                     dead_letter_stream_name="no_such_stream"))
    bodies: list[bytes | str] = [json.dumps(r).encode() for r in RIDES[:5]] + [b"nope"] + [
        json.dumps(r).encode() for r in RIDES[5:10]]
    answer = handler(event(bodies), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": f"4959{5:040d}"}]}
    assert [json.loads(r["Data"])["ride_id"] for r in read_stream(aws, out)] == [r["ride_id"] for r in RIDES[:10]]

    down = kinesis_lambda.KinesisHandler(Settings(predictions_stream_name="no_such_output"))
    answer = down(event([json.dumps(r).encode() for r in RIDES[:3]]), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": f"4959{i:040d}"} for i in range(3)]}


def test_without_an_output_stream_the_handler_refuses_to_start(monkeypatch):
    with pytest.raises(RuntimeError, match="PREDICTIONS_STREAM_NAME"):
        kinesis_lambda.KinesisHandler(Settings(predictions_stream_name=None))
