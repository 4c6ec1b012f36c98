"""What one gunicorn master's workers pass on to the workers it forks later.

gunicorn forks replacement workers (``max_requests``, a crash) from the master, whose copy of
the model is the start-up one. So that a new worker does not answer with that stale version
while its siblings serve the current one, workers hand off through a private directory: the
last installed model (pickled ``LoadedModel``) and the rejected versions. A new worker restores
from it before serving, with no registry call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import tempfile
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from ..model.predictor import LoadedModel
    from .fetch import Target

log = logging.getLogger(__name__)


class Handoff:
    """What the workers of one gunicorn master pass on to the workers it forks later.

    Files in a ``0700`` directory under the temp dir, named after the master's PID:
    ``current.pkl`` (key, target and the checked ``LoadedModel``) and ``rejected.json``.
    Written with an atomic rename; every failure only costs a log line.
    """

    def __init__(self, owner_pid: int, suffix: str = "") -> None:
        self.dir = Path(tempfile.gettempdir()) / f"ride-duration-registry-{owner_pid}{suffix}"

    def _private(self) -> bool:
        """The directory exists, is ours and nobody else's (we unpickle what is in it)."""
        info = self.dir.stat()
        return info.st_uid == os.getuid() and not info.st_mode & 0o077

    def _write(self, name: str, blob: bytes) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            if not self._private():
                raise PermissionError(f"{self.dir} is not private to this user")
            tmp = self.dir / f".{name}.{os.getpid()}"
            tmp.write_bytes(blob)
            os.replace(tmp, self.dir / name)
        except OSError as exc:
            log.warning("model hand-off not written (%s): %s", self.dir, exc)

    def _read(self, name: str) -> bytes | None:
        path = self.dir / name
        try:
            return path.read_bytes() if self._private() else None
        except OSError:
            return None

    def clear(self) -> None:
        """Forget a previous master's hand-off (a restarted container reuses PIDs)."""
        for name in ("current.pkl", "rejected.json"):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    def save_model(self, key: str, target: Target, model: LoadedModel) -> None:
        self._write("current.pkl", pickle.dumps((key, target, model), protocol=5))

    def save_rejected(self, rejected: dict[str, str]) -> None:
        self._write("rejected.json", json.dumps(rejected).encode())

    def read(self) -> tuple[tuple[str, Target, LoadedModel] | None, dict[str, str]]:
        current = rejected = None
        with contextlib.suppress(Exception):  # unreadable hand-off: start from the master's model
            blob = self._read("current.pkl")
            current = pickle.loads(blob) if blob else None  # noqa: S301 - written by our own workers, 0700
        with contextlib.suppress(Exception):
            blob = self._read("rejected.json")
            rejected = json.loads(blob) if blob else None
        return current, dict(rejected or {})
