"""The model a process answers with, swapped atomically, and its life events (logs, metrics listeners)."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from ..errors import ModelNotReady
from .loading import ModelLoadError, load_file

if t.TYPE_CHECKING:
    from ..config import Settings
    from .predictor import LoadedModel

log = logging.getLogger(__name__)
Listener = t.Callable[..., None]
RESERVED_LOG_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
"""``extra`` keys a LogRecord refuses (``name``, ``msg``, …): such event fields are renamed ``field_*``."""


class ModelHolder:
    """Holds the serving model; readers take one reference per request, so a swap never tears a request."""

    def __init__(self, role: str = "served") -> None:
        self.role = role
        """``served`` (the model that answers) or ``shadow`` (ride_duration.model.shadow): in every event."""
        self.current: LoadedModel | None = None
        self.reason: str | None = "model not loaded yet"
        self.events: dict[str, t.Any] = {}
        self.refused: dict[str, dict[str, t.Any]] = {}
        """Versions this process refused (never swapped in), by version: ``{"version", "reason", "code"}``."""
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()

    def require(self) -> LoadedModel:
        """The serving model. :raises ModelNotReady: none is loaded (503)."""
        model = self.current
        if model is None:
            raise ModelNotReady(f"no model loaded: {self.reason}")
        return model

    def swap(self, model: LoadedModel, event: str = "model_loaded", **fields: t.Any) -> None:
        """Make ``model`` the serving model (one reference assignment)."""
        with self._lock:
            previous = self.current
            self.current = model
            self.reason = None
        self.emit(event, model_version=model.version, source=model.source,
                  previous_version=previous.version if previous else None, **fields)

    def refuse(self, version: str, reason: str, code: str = "invalid", **fields: t.Any) -> None:
        """Record that ``version`` was refused and why; the serving model stays as it is."""
        self.refused[version] = {"version": version, "reason": reason, "code": code}
        self.emit("model_rejected", version=version, reason=reason, code=code, **fields)

    def fail(self, reason: str) -> None:
        """Record why no model is serving (only meaningful while none is)."""
        self.reason = reason
        self.emit("model_load_failed", reason=reason)

    def emit(self, event: str, **fields: t.Any) -> None:
        """Log an event and tell listeners (metrics).

        Problems log at WARNING; a successful routine registry check at DEBUG (every worker
        polls, so INFO would flood); everything else at INFO.
        """
        if self.role != "served":
            fields = {"role": self.role, **fields}
        self.events[event] = {"at": time.time(), **fields}
        if any(word in event for word in ("fail", "reject", "fallback")) or fields.get("ok") is False:
            level = logging.WARNING
        elif event == "registry_checked":
            level = logging.DEBUG
        else:
            level = logging.INFO
        extra = {("field_" + k if k in RESERVED_LOG_KEYS else k): v for k, v in fields.items()}
        log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items() if v is not None),
                extra={"event": event, **extra})
        for listener in self.listeners:
            listener(event, **fields)


def load_bundled(settings: Settings, holder: ModelHolder, note: str | None = None) -> bool:
    """Load ``MODEL_PATH`` into ``holder``; on failure record why and return False.

    A path the operator named (``MODEL_PATH`` set, or a job's ``--model-path``) is trusted as
    named; the bundled default must have a digest to check unless ``ALLOW_PICKLE_MODELS=true``.
    """
    explicit = "model_path" in settings.model_fields_set
    try:
        model = load_file(settings.model_path, settings.model_sha256, source="bundled",
                          require_digest=not (explicit or settings.allow_pickle_models))
    except ModelLoadError as exc:
        holder.fail(str(exc))
        return False
    if note:
        model.info["fallback_reason"] = note
        model.info["warnings"].append(note)
    if note:
        holder.swap(model, event="model_fallback", reason=note)
    else:
        holder.swap(model, event="model_loaded")
    return True
