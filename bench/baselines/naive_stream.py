"""The course's way of streaming predictions, on Kafka: one message at a time.

Per message: ``poll``, ``json.loads``, the course's ``prepare_features``, one ``dv.transform`` and one
``model.predict`` on that single ride, one ``produce`` (asynchronous, as a Kinesis ``put_record``
would be awaited one by one in the course; here librdkafka batches the sends, which only helps
this baseline). Auto-commit, no dead letters, no validation: it is the yardstick, not a design.

    python bench/baselines/naive_stream.py BOOTSTRAP SOURCE_TOPIC SINK_TOPIC GROUP
"""

from __future__ import annotations

import json
import pickle
import signal
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer

MODEL = Path(__file__).resolve().parents[2] / "model" / "lin_reg.bin"


def prepare_features(ride: dict) -> dict:
    return {"PU_DO": f"{ride['PULocationID']}_{ride['DOLocationID']}", "trip_distance": ride["trip_distance"]}


def main(bootstrap: str, source: str, sink: str, group: str) -> int:
    with open(MODEL, "rb") as f:
        dv, model = pickle.load(f)  # noqa: S301 - the repo's own bundled model
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000})
    producer = Producer({"bootstrap.servers": bootstrap})
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([source])
    while running:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        ride = json.loads(msg.value())
        X = dv.transform(prepare_features(ride))
        duration = float(model.predict(X)[0])
        producer.produce(sink, json.dumps({"ride_id": ride["ride_id"], "duration": duration}).encode(),
                         str(ride["ride_id"]).encode())
        producer.poll(0)
    producer.flush(10)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
