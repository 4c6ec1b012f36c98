"""The stream consumer with a shadow model: a real ``mlflow server`` (the session's), a real tansu broker.

``@production`` = the bundled weights (v1), ``@challenger`` = the same + 1 minute (v2), raising on
poisoned rides. Every ride gets its served v1 prediction on the predictions topic; the shadow's
records go to ``--shadow-sink`` with both versions; rides the shadow fails on are counted, never
lost or held.
"""

from __future__ import annotations

import re
import uuid

import pytest

from tests import shadow_models
from tests.shadow_models import POISON
from tests.stream.broker import StreamProcess, Tansu, TopicReader
from tests.stream.test_kafka_consumer import encode, rides
from tests.support import free_port, http, wait_until

pytestmark = pytest.mark.slow


def shadow_errors(port: int, version: str) -> float:
    text = http("GET", f"http://127.0.0.1:{port}/metrics")[2].decode()
    match = re.search(rf'^ride_duration_shadow_errors_total\{{shadow_version="{re.escape(version)}"\}} (\S+)$', text,
                      re.M)
    return float(match.group(1)) if match else 0.0


def test_shadow_records_beside_every_served_prediction(mlflow_server, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.url)
    name = f"stream-shadow-{uuid.uuid4().hex[:8]}"
    v1 = f"{name}-v{shadow_models.register(name, alias='production')}"
    v2 = f"{name}-v{shadow_models.register(name, shadow_models.shifted(1.0, 'raise'), alias='challenger')}"
    topics = ("sh-rides", "sh-predictions", "sh-dead", "sh-shadow")
    port = free_port()
    with Tansu(tmp_path / "tansu") as broker:
        broker.create_topics(dict.fromkeys(topics, 2))
        proc = StreamProcess(tmp_path / "consumer.log", [
            "--source", broker.url(topics[0]), "--sink", broker.url(topics[1]), "--dead-letter", broker.url(topics[2]),
            "--group", "shadow", "--batch-size", "50", "--shadow-model-uri", f"models:/{name}@challenger",
            "--shadow-sink", broker.url(topics[3]), "--metrics-port", str(port)],
            {"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_NAME": name, "ALLOW_PICKLE_MODELS": "true",
             "MODEL_FALLBACK": "false"}).start()
        served, shadow = TopicReader(broker.bootstrap, topics[1]), TopicReader(broker.bootstrap, topics[3])
        try:
            assert proc.wait_event("shadow_on", timeout=120)[0]["shadow_version"] == v2
            proc.wait_event("partitions_assigned", timeout=60)
            good = rides(60)
            broker.produce(topics[0], encode(good))
            served.until(lambda r: len(r.messages) >= 60, 60, "60 served predictions")
            shadow.until(lambda r: len(r.messages) >= 60, 60, "60 shadow records")
            poisoned = [{**ride, "ride_id": f"p{ride['ride_id']}", "trip_distance": POISON} for ride in rides(20)]
            broker.produce(topics[0], encode(poisoned))
            served.until(lambda r: len(r.messages) >= 80, 60, "the poisoned rides' served predictions")
            wait_until(lambda: shadow_errors(port, v2) >= 20, 30, "the shadow error counter")
            assert proc.terminate() == 0
            shadow.poll(1.0)
        finally:
            proc.stop()
            served.close()
            shadow.close()
    answers = {m["ride_id"]: m for m in served.json()}
    assert set(answers) == {r["ride_id"] for r in good + poisoned}
    assert {m["model_version"] for m in answers.values()} == {v1}
    records = shadow.json()
    assert sorted(m["ride_id"] for m in records) == sorted(r["ride_id"] for r in good)  # none for the poisoned
    for record in records:
        answer = answers[record["ride_id"]]
        assert record["role"] == "shadow" and record["model_version"] == v2 and record["served_model_version"] == v1
        assert record["served_duration"] == answer["duration"]
        assert record["duration"] == pytest.approx(answer["duration"] + 1.0, abs=1e-9)
    assert {m.key() for m in shadow.messages} == {str(r["ride_id"]).encode() for r in good}
