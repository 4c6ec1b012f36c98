"""``python -m ride_duration stream``: the Kafka consumer as a command.

    python -m ride_duration stream --source kafka://localhost:9092/rides \\
        --sink kafka://localhost:9092/ride-predictions \\
        --dead-letter kafka://localhost:9092/rides-dead-letter [--group ride-duration]

The model is chosen as the service chooses it (:func:`ride_duration.startup.follow_model`):
with ``MLFLOW_TRACKING_URI`` the registry's ``MODEL_URI`` (default
``models:/<MODEL_NAME>@production``), re-resolved every ``MODEL_POLL_SECONDS`` and hot-swapped
between batches; else the bundled file (``MODEL_PATH``). Flags override the ``STREAM_*``
settings (``ride_duration.config.Settings``) and are checked by the same fields: ``--batch-size 0``
is refused exactly as ``STREAM_BATCH_SIZE=0`` is. Exit codes (:class:`ride_duration.errors.ExitCode`):
0 stopped cleanly, 1 no model or the shutdown bound passed, 2 bad arguments (one line naming the
flag or variable).
"""

from __future__ import annotations

import argparse
import logging
import typing as t

from ..config import Settings, add_model_options, settings_from
from ..errors import BadInput, ExitCode
from ..model.holder import ModelHolder
from ..startup import follow_model, follow_shadow
from . import metrics
from .endpoints import kafka_topic

log = logging.getLogger(__name__)


def kafka_url(text: str) -> t.Any:
    try:
        return kafka_topic(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


FLAGS = {"stream_batch_size": "--batch-size", "stream_batch_wait": "--batch-wait", "stream_group": "--group",
         "stream_metrics_port": "--metrics-port", "shadow_model_uri": "--shadow-model-uri",
         "shadow_sample_rate": "--shadow-sample-rate"}
"""Settings field → the flag that overrides it."""


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings with the flags on top, validated by the settings' own fields.

    :raises BadInput: a flag or environment variable out of range (names it).
    """
    flags = {field: (flag, getattr(args, field.removeprefix("stream_"), None)) for field, flag in FLAGS.items()}
    values: dict[str, t.Any] = {}
    if args.model_uri:
        values["model_uri"] = args.model_uri
    if args.model_path:
        values.update(model_path=args.model_path, mlflow_tracking_uri=None)
    return settings_from(flags, **values)


def run(args: argparse.Namespace) -> int:
    from .kafka_consumer import StreamConsumer

    settings = settings_for(args)
    if args.model_uri and not settings.mlflow_tracking_uri:
        raise BadInput("--model-uri needs MLFLOW_TRACKING_URI")
    if args.shadow_sink is not None and not settings.shadow_model_uri:
        raise BadInput("--shadow-sink needs a shadow model: --shadow-model-uri or SHADOW_MODEL_URI")
    holder = ModelHolder()
    holder.listeners.append(metrics.on_model_event)
    watcher = follow_model(settings, holder)
    if holder.current is None:
        log.error("no model to serve: %s", holder.reason, extra={"event": "stream_failed"})
        return ExitCode.ERROR
    scorer, shadow_sink, shadow_watcher = start_shadow(settings, args)
    consumer = StreamConsumer(settings, holder, args.source, args.sink, args.dead_letter,
                              settings.stream_group, dict(args.kafka_config or []), scorer)
    consumer.install_signal_handlers()
    metrics.serve(settings.stream_metrics_port, settings.stream_metrics_host)
    try:
        return consumer.run()
    finally:
        for follower in (watcher, shadow_watcher):
            if follower is not None:
                follower.stop()
        if scorer is not None:
            scorer.stop()
        if shadow_sink is not None:
            shadow_sink.close()


def start_shadow(settings: Settings, args: argparse.Namespace) -> tuple[t.Any, t.Any, t.Any]:
    """The shadow scorer (None without ``SHADOW_MODEL_URI``), its Kafka sink (None without
    ``--shadow-sink``: metrics only) and the shadow's registry watcher."""
    from ..model.shadow import ShadowScorer
    from .kafka_consumer import ShadowSink

    followed = follow_shadow(settings)
    if followed is None:
        return None, None, None
    holder, watcher = followed
    sink = ShadowSink(settings, args.shadow_sink, dict(args.kafka_config or [])) if args.shadow_sink else None
    scorer = ShadowScorer(holder, settings.shadow_sample_rate, settings.shadow_queue, sink,
                          uri=settings.shadow_model_uri)
    scorer.start()
    state = scorer.state()
    log.info("shadow scoring on: %s (%s), sample rate %s, to %s", settings.shadow_model_uri,
             state["model_version"] or state.get("reason"), settings.shadow_sample_rate,
             args.shadow_sink or "metrics only", extra={"event": "shadow_on", "shadow_version": state["model_version"]})
    return scorer, sink, watcher


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``python -m ride_duration stream``."""
    defaults = Settings.model_fields
    stream = commands.add_parser(
        "stream", help="consume rides from Kafka, produce predictions (and dead letters) to Kafka",
        description="Kafka consumer: one JSON ride per message in, {ride_id, duration, model_version} out, "
                    "micro-batched, at-least-once (offsets committed after the outputs are acknowledged).")
    stream.add_argument("--source", type=kafka_url, required=True, help="kafka://HOST:PORT[,HOST:PORT]/TOPIC of rides")
    stream.add_argument("--sink", type=kafka_url, required=True, help="kafka://.../TOPIC for predictions")
    stream.add_argument("--dead-letter", type=kafka_url, required=True,
                        help="kafka://.../TOPIC for messages that are not valid rides")
    stream.add_argument("--group", dest="group", default=None,
                        help=f"consumer group (STREAM_GROUP, default {defaults['stream_group'].default})")
    stream.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                        help=f"most messages per micro-batch (STREAM_BATCH_SIZE, default "
                             f"{defaults['stream_batch_size'].default})")
    stream.add_argument("--batch-wait", dest="batch_wait", type=float, default=None,
                        help=f"seconds a batch waits to fill (STREAM_BATCH_WAIT, default "
                             f"{defaults['stream_batch_wait'].default})")
    stream.add_argument("--metrics-port", dest="metrics_port", type=int, default=None,
                        help=f"Prometheus port, 0 for none (STREAM_METRICS_PORT, default "
                             f"{defaults['stream_metrics_port'].default})")
    add_model_options(stream, follow=True)
    stream.add_argument("--shadow-model-uri", dest="shadow_model_uri", default=None,
                        help="registry URI of a shadow model that also scores a sampled share of the rides, off the "
                             "served path (SHADOW_MODEL_URI), e.g. models:/nyc-taxi-ride-duration@challenger")
    stream.add_argument("--shadow-sample-rate", dest="shadow_sample_rate", type=float, default=None,
                        help=f"share of batches the shadow scores, 0-1 (SHADOW_SAMPLE_RATE, default "
                             f"{defaults['shadow_sample_rate'].default})")
    stream.add_argument("--shadow-sink", type=kafka_url, default=None,
                        help="kafka://.../TOPIC for the shadow's predictions ({ride_id, role: shadow, duration, "
                             "model_version, served_duration, served_model_version}); without it, metrics only")
    stream.add_argument("--kafka-config", type=key_value, action="append", metavar="KEY=VALUE",
                        help="extra librdkafka setting for the consumer and producers (repeatable), "
                             "e.g. security.protocol=SASL_SSL")
    stream.set_defaults(run=run)
