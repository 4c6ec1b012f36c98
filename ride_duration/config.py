"""All service settings, read once from the environment (no prefix; names as documented).

The offline jobs read them too: :func:`settings_from` puts their flags on top, validated by the
same fields, and :func:`add_model_options` is the one definition of ``--model-path``/``--model-uri``.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    import argparse

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import BadInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = PROJECT_ROOT / "model" / "lin_reg.bin"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """Typed settings; every field maps to the upper-case env var of the same name."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, protected_namespaces=())

    model_path: Path = DEFAULT_MODEL_PATH
    """Bundled (or any) pickle of ``(DictVectorizer, regressor)``."""
    model_sha256: str | None = None
    """Expected sha256 of ``model_path``; default: from ``metadata.json`` beside it."""
    mlflow_tracking_uri: str | None = None
    """When set, the model comes from the registry at ``model_uri``."""
    model_name: str = "nyc-taxi-ride-duration"
    """Registered model name (used by the default ``model_uri``)."""
    model_uri: str | None = None
    """Registry URI; default ``models:/<model_name>@production``."""
    model_fallback: bool = True
    """Serve the bundled model when the registry cannot be used at start-up."""
    model_poll_seconds: float = Field(30.0, ge=0)
    """How often to re-resolve ``model_uri``; 0 disables the watcher."""
    model_load_timeout: float = Field(5.0, gt=0)
    """Seconds the registry may take at start-up before falling back."""
    allow_pickle_models: bool = False
    """UNSAFE: accept pickled (``pickle``/``cloudpickle``) models from the registry, and a bundled model
    file whose sha256 cannot be checked. Unpickling runs whatever code the file carries: anyone who can
    write to the registry could then run commands in every serving pod. Off: such versions are refused."""
    model_signing_key: str | None = None
    """Ed25519 public key(s) that sign registered models: PEM text or the path of a PEM file (several
    keys allowed, for a rotation). When set, an unsigned or wrongly signed version is refused."""
    model_signing_private_key: str | None = None
    """Trainer/CI only, never the service: the Ed25519 private key (path of an unencrypted PKCS#8 PEM
    file, or the PEM text) that ``train.py --register``, ``retrain`` and ``promote`` sign new versions with."""
    max_batch_size: int = Field(10_000, ge=1)
    """Most rides accepted in one request."""
    max_content_length: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body in bytes (413 above it)."""
    log_level: str = "INFO"
    """Log level of the app and of gunicorn (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``)."""
    prediction_log_dir: Path | None = None
    """Directory for the sampled prediction log (JSON lines, one file set per worker); unset: off."""
    prediction_log_sample_rate: float = Field(1.0, ge=0, le=1)
    """Share of prediction requests whose rides are logged (0-1), when ``prediction_log_dir`` is set."""
    prediction_log_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    """Size at which a worker's prediction log file is rotated."""
    prediction_log_backups: int = Field(5, ge=1)
    """Rotated prediction log files kept per worker (``.1`` newest .. ``.N`` oldest)."""
    prediction_log_queue: int = Field(10_000, ge=1)
    """Logged requests waiting for the writer thread; when full, new ones are dropped and counted."""
    shadow_model_uri: str | None = None
    """Registry URI of a shadow model (e.g. ``models:/nyc-taxi-ride-duration@challenger``), followed like
    ``model_uri`` (same watcher, checks and refusals; needs ``mlflow_tracking_uri``). A sampled share of
    the prediction requests is also scored by it, off the response path: answers never wait for it or
    carry it; its predictions go to the prediction log (``"role": "shadow"`` lines) and ``/metrics``.
    Unset: off."""
    shadow_sample_rate: float = Field(1.0, ge=0, le=1)
    """Share of prediction requests (0-1) whose rides the shadow model also scores, when
    ``shadow_model_uri`` is set."""
    shadow_queue: int = Field(10_000, ge=1)
    """Requests waiting for the shadow model per process; when full, new ones are dropped and counted
    (``ride_duration_shadow_dropped_rides_total``), never waited for."""
    api_tokens_file: Path | None = None
    """File of bearer tokens the prediction routes (``/predict``, ``/invocations``, V2 ``infer``) require:
    one per line, the token or ``sha256:<hex>`` of it; re-read when it changes. Unset: no
    authentication (docs/security.md)."""
    tlc_data_dir: Path = PROJECT_ROOT.parent / "shared" / "data"
    """Folder of local ``green_tripdata_YYYY-MM.parquet`` files (jobs); a month not there is downloaded.
    The one default of every job's ``--data-dir`` (``train.py``, ``monitor``, ``promote``; ``retrain`` reads it)."""
    tlc_download: bool = True
    """Jobs may download a month missing from ``tlc_data_dir`` from the TLC's public URL."""

    # ---- streaming (python -m ride_duration stream, the Kinesis Lambda handler) -------------------
    stream_batch_size: int = Field(500, ge=1, le=100_000)
    """Most messages the Kafka consumer takes per micro-batch (one vectorised predict each)."""
    stream_batch_wait: float = Field(0.1, gt=0, le=60)
    """Seconds a micro-batch waits to fill before it is processed anyway (bounds the latency)."""
    stream_group: str = "ride-duration"
    """Kafka consumer group (``--group``); consumers in one group share the topic's partitions."""
    stream_session_timeout_ms: int = Field(10_000, ge=1000)
    """Kafka ``session.timeout.ms``: a killed consumer's partitions move after this long."""
    stream_delivery_timeout_ms: int = Field(60_000, ge=1000)
    """Kafka ``delivery.timeout.ms``: how long an output may take to be acknowledged before the batch
    counts as failed (not committed, redone from its first offset)."""
    stream_shutdown_timeout: float = Field(20.0, gt=0)
    """Seconds SIGTERM may spend flushing the batch in hand before the consumer gives up (exit 1,
    nothing committed, nothing lost: the batch is redelivered)."""
    stream_retry_max_seconds: float = Field(30.0, gt=0)
    """Longest back-off between retries of a batch whose outputs could not be delivered."""
    stream_metrics_port: int = Field(9102, ge=0, le=65535)
    """Port of the consumer's Prometheus ``/metrics`` (0: no metrics server)."""
    stream_metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    """Address the consumer's metrics server binds."""
    predictions_stream_name: str | None = None
    """Kinesis stream the Lambda handler writes predictions to (required by the handler)."""
    dead_letter_stream_name: str | None = None
    """Kinesis stream for records that are not valid rides; unset: they are logged (error and
    source, not the payload) and not retried."""

    # ---- python -m ride_duration evaluate (predictions joined with actual durations) -----------------
    evaluate_group: str = Field("ride-duration-evaluate", min_length=1, max_length=255)
    """Kafka ``group.id`` ``evaluate`` reads predictions topics under (``--group``). It assigns partitions
    and commits nothing, so it never joins, rebalances or moves the offsets of a running consumer group."""
    evaluate_kafka_timeout: float = Field(30.0, gt=0, le=3600)
    """Seconds ``evaluate`` waits for a broker (metadata, end offsets) and for the next message of a topic
    it has not read to the end (``--kafka-timeout``); then it gives up with exit 1."""

    # ---- connections: deadlines and limits for every way a client can hold one (docs/hardening.md).
    # Applied by gunicorn.conf.py and ride_duration.web.worker (the default gevent worker), and for the
    # body by ride_duration.web.body_deadline.
    header_timeout: float = Field(5.0, gt=0)
    """Seconds a new connection has to deliver its first request line and all headers; then it is
    closed without an answer (silent and trickling connections)."""
    keepalive_timeout: int = Field(5, ge=1)
    """Seconds an idle keep-alive connection has, after a response, to deliver the next request's
    complete headers; then it is closed. Whole seconds, at least 1 (gunicorn's 0 would leave headers unbounded)."""
    body_timeout: float = Field(10.0, gt=0)
    """Grace seconds for a request body; after them the body must keep up ``body_min_rate``, else
    408 ``request_timeout`` and the connection is closed."""
    body_min_rate: int = Field(32 * 1024, ge=1)
    """Slowest accepted average body pace in bytes/s, once ``body_timeout`` has passed."""
    send_timeout: float = Field(30.0, gt=0)
    """Seconds a request may spend waiting on one socket write (a client that never reads its
    response) or on one body read; then the connection is closed."""
    worker_connections: int = Field(1000, ge=1)
    """Open connections per gevent worker; beyond it the worker stops accepting and new
    connections queue in the kernel's listen backlog (other workers keep accepting)."""
    max_inflight: int = Field(128, ge=1)
    """Requests one gevent worker holds at once (headers read, not answered yet; a body still
    arriving counts). Beyond it a request is answered at once with 503 ``overloaded`` and
    ``Retry-After: 1`` instead of waiting in an unbounded queue; ``/health``, ``/ready`` and
    ``/metrics`` are never refused. 128 single rides wait ~30 ms for their turn (docs/hardening.md)."""
    limit_request_line: int = Field(4094, ge=64, le=8190)
    """Longest request line in bytes (gunicorn ``limit_request_line``; 400 above it)."""
    limit_request_fields: int = Field(100, ge=1, le=32768)
    """Most header fields per request (gunicorn ``limit_request_fields``; 400 above it)."""
    limit_request_field_size: int = Field(8190, ge=64)
    """Longest header field in bytes, name and value (gunicorn ``limit_request_field_size``; 400 above it)."""

    @field_validator("api_tokens_file", "shadow_model_uri", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``API_TOKENS_FILE=`` (empty) means off, not the current directory."""
        return None if value == "" else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def resolved_model_uri(self) -> str:
        return self.model_uri or f"models:/{self.model_name}@production"


def settings_from(flags: t.Mapping[str, tuple[str, t.Any]] | None = None, **values: t.Any) -> Settings:
    """The environment's settings with command-line values on top, validated by the same fields.

    ``flags`` maps a field to ``(flag, value)`` (a None value was not given); ``values`` are set as
    they are. A job calls this instead of ``Settings().model_copy(update=...)``, which validates nothing.

    :raises BadInput: one line naming each bad flag or environment variable and its problem.
    """
    given = {field: value for field, (_, value) in (flags or {}).items() if value is not None}
    try:
        return Settings(**given, **values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in given:
                where = f"{flags[field][0]} {given[field]}"  # type: ignore[index]
            else:
                where = f"environment variable {field.upper()}={str(error.get('input'))[:80]!r}"
            problems.append(f"{where}: {error['msg']}")
        raise BadInput("; ".join(problems)) from None


def add_model_options(parser: argparse.ArgumentParser, follow: bool = False) -> None:
    """The flags that override ``MODEL_PATH`` / ``MODEL_URI`` for a job (one or the other), the same
    for every job. ``follow``: the stream's wording (it follows the URI's alias; the others resolve it once)."""
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-path", type=Path, default=None,
                       help="a fixed model pickle (no registry); its sha256 from MODEL_SHA256 or metadata.json "
                            "beside it" + ("" if follow else "; default: MODEL_PATH or the bundled model"))
    model.add_argument("--model-uri", default=None,
                       help=("registry URI to follow, e.g. models:/nyc-taxi-ride-duration@production "
                             "(needs MLFLOW_TRACKING_URI; default MODEL_URI)") if follow else
                            "registry URI such as models:/nyc-taxi-ride-duration@production (MLFLOW_TRACKING_URI)")
