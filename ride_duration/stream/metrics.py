"""The consumer's Prometheus metrics, served by ``prometheus_client.start_http_server`` on a port.

One process, so the default registry is enough (no multiprocess directory):

* ``ride_stream_consumed_total``, ``ride_stream_predictions_total``,
  ``ride_stream_dead_letters_total``: messages read, predictions and dead letters acknowledged
  by the broker (counted when committed);
* ``ride_stream_delivery_failures_total``: batches whose outputs could not be delivered (redone);
* ``ride_stream_batch_seconds``: validate + predict + produce + flush + commit of one batch;
* ``ride_stream_batch_size``: messages per batch;
* ``ride_stream_lag{topic,partition}``: high watermark minus the consumer's position;
* ``ride_stream_model_info{version,source}``: 1 for the model in use (swaps update it).
"""

from __future__ import annotations

import logging
import typing as t

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

CONSUMED = Counter("ride_stream_consumed", "Messages read from the source topic and committed")
PREDICTIONS = Counter("ride_stream_predictions", "Predictions acknowledged by the broker")
DEAD_LETTERS = Counter("ride_stream_dead_letters", "Invalid messages written to the dead-letter topic")
DELIVERY_FAILURES = Counter("ride_stream_delivery_failures", "Batches whose outputs were not delivered (redone)")
BATCH_SECONDS = Histogram("ride_stream_batch_seconds", "Seconds per micro-batch, consume excluded",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
BATCH_SIZE = Histogram("ride_stream_batch_size", "Messages per micro-batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
LAG = Gauge("ride_stream_lag", "Messages behind the high watermark", ["topic", "partition"])
MODEL = Gauge("ride_stream_model_info", "The model in use (1)", ["version", "source"])


def serve(port: int, host: str) -> None:
    """Start the ``/metrics`` server thread (port 0: none)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%s/metrics", host, port, extra={"event": "metrics_listening", "port": port})


def on_model_event(event: str, **fields: t.Any) -> None:
    """A ``ModelHolder`` listener: the info gauge follows loads and swaps."""
    if event in ("model_loaded", "model_swapped", "model_fallback") and fields.get("model_version"):
        MODEL.clear()
        MODEL.labels(fields["model_version"], fields.get("source") or "").set(1)


def set_lag(lags: t.Iterable[tuple[str, int, int]]) -> None:
    for topic, partition, lag in lags:
        LAG.labels(topic, str(partition)).set(lag)
