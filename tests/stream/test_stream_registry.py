"""The consumer follows the registry alias like the service: a real ``mlflow server``, v1 then v2
promoted mid-stream, hot-swapped without a restart; every prediction names the version that made
it and equals that version's own prediction; no ride lost across the swap."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest

from ride_duration.model.predictor import LoadedModel
from tests.registry.test_registry import fit, register
from tests.stream.broker import StreamProcess, Tansu, TopicReader
from tests.stream.test_kafka_consumer import encode, rides
from tests.support import untraced_thread, wait_until
from tests.synthetic import write_month

pytestmark = pytest.mark.slow


def test_model_swap_mid_stream(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    name = "stream-swap"
    v1_month = write_month(tmp_path / "v1.parquet", n=2000, seed=21)
    v2_month = write_month(tmp_path / "v2.parquet", n=2000, seed=22, month="2021-02", slope=4.0)
    registry = mlflow_server  # the run's shared server (tests/conftest.py): the model name is this test's
    with Tansu(tmp_path / "tansu") as broker:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
        mlflow.set_tracking_uri(registry.url)
        dv1, lr1, _ = fit(v1_month)
        register(name, dv1, lr1, v1_month)
        names = ("swap-rides", "swap-predictions", "swap-dead")
        broker.create_topics(dict.fromkeys(names, 3))
        env = {"MLFLOW_TRACKING_URI": registry.url, "MODEL_NAME": name, "MODEL_POLL_SECONDS": "1",
               "MODEL_FALLBACK": "false"}
        proc = StreamProcess(tmp_path / "consumer.log", [
            "--source", broker.url(names[0]), "--sink", broker.url(names[1]), "--dead-letter", broker.url(names[2]),
            "--group", "swap", "--batch-size", "100"], env).start()
        reader = TopicReader(broker.bootstrap, names[1])
        sent: list[dict[str, t.Any]] = []
        stop = threading.Event()

        def feed() -> None:  # ~500 rides/s until told to stop
            producer, i = broker.producer(), 0
            while not stop.is_set():
                batch = rides(50, start=i)
                for body in encode(batch):
                    producer.produce(names[0], body)
                producer.flush(10)
                sent.extend(batch)
                i += 50
                time.sleep(0.1)

        feeder = threading.Thread(target=untraced_thread(feed), daemon=True)
        try:
            proc.wait_event("partitions_assigned", timeout=60)
            feeder.start()
            reader.until(lambda r: len(r.messages) >= 300, 60, "v1 predictions")
            dv2, lr2, _ = fit(v2_month)
            register(name, dv2, lr2, v2_month)  # moves @production to v2
            reader.until(lambda r: any(m["model_version"] == f"{name}-v2" for m in r.json()[-200:]), 60,
                         "predictions from v2 without a restart")
            fed = len(sent)  # a few more batches after the swap, then stop
            wait_until(lambda: len(sent) >= fed + 200, 30, "200 more rides fed after the swap")
            stop.set()
            feeder.join(20)
            want = {r["ride_id"] for r in sent}
            reader.until(lambda r: want <= {m["ride_id"] for m in r.json()}, 60, "every ride sent")
            assert proc.terminate() == 0
        finally:
            stop.set()
            proc.stop()
            reader.close()

    out = reader.json()
    assert {m["ride_id"] for m in out} == want
    by_version: dict[str, list[dict[str, t.Any]]] = {}
    for m in out:
        by_version.setdefault(m["model_version"], []).append(m)
    assert set(by_version) == {f"{name}-v1", f"{name}-v2"}
    sent_by_id = {r["ride_id"]: r for r in sent}
    for version, (dv, lr) in {f"{name}-v1": (dv1, lr1), f"{name}-v2": (dv2, lr2)}.items():
        reference = LoadedModel.build(dv, lr, version=version, source="test")
        ms = by_version[version]
        assert [m["duration"] for m in ms] == reference.predict([sent_by_id[m["ride_id"]] for m in ms])
    assert len(proc.events("model_swapped")) == 1
    assert proc.events("model_swapped")[0]["model_version"] == f"{name}-v2"
