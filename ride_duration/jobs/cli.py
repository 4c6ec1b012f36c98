"""What every offline job shares on the command line: one error path, the model options, model loading.

The error path (:func:`execute`), for ``python -m ride_duration …`` and ``train.py`` alike:

* a bad flag is one ``prog: error: …`` line on stderr and exit 2 (:class:`Parser`, argparse's own
  check, without the usage block);
* an invalid environment variable, or any :class:`~ride_duration.errors.BadInput` a job raises (a
  file, column, type or range it cannot use), is one JSON log line naming it, and exit 2;
* any other :class:`~ride_duration.errors.JobError` (the model cannot be loaded, a dependency is
  unreachable) is one line and its own exit code;
* anything else is one line and exit 1. No traceback is printed unless ``--debug`` is given.

The exit codes are :class:`ride_duration.errors.ExitCode`.
"""

from __future__ import annotations

import argparse
import logging
import typing as t
from pathlib import Path

from ..config import Settings, add_model_options, settings_from  # noqa: F401 - add_model_options: the jobs' one
from ..errors import ExitCode, JobError
from ..logs import JsonFormatter, setup_logging

if t.TYPE_CHECKING:
    from ..model.predictor import LoadedModel

log = logging.getLogger("ride_duration.jobs")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (``prog: error: argument --x: problem (see --help)``), exit 2."""

    def error(self, message: str) -> t.NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def add_debug(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--debug``: log at DEBUG and let an unexpected error print its traceback."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="log at DEBUG level and show the traceback of an unexpected error")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    return _float(text, lambda v: v >= 0, "must be at least 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    return _float(text, lambda v: v > 0, "must be above 0")


def _float(text: str, ok: t.Callable[[float], bool], rule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value == value and abs(value) != float("inf")) or not ok(value):  # NaN, inf
        raise argparse.ArgumentTypeError(f"{rule} and finite, not {text}")
    return value


class NoTracebacks(logging.Filter):
    """Drops ``exc_info`` from every record: without ``--debug`` a job's output holds no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {str(error)[:500]}"
            record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


def setup(debug: bool) -> Settings:
    """JSON logging (level ``LOG_LEVEL``, DEBUG with ``--debug``) and the validated settings.

    :raises BadInput: an environment variable the settings refuse.
    """
    setup_logging("DEBUG" if debug else "INFO")
    root = logging.getLogger()
    for handler in (h for h in root.handlers if isinstance(h.formatter, JsonFormatter)):
        for old in [f for f in handler.filters if isinstance(f, NoTracebacks)]:
            handler.removeFilter(old)
        if not debug:
            handler.addFilter(NoTracebacks())
    settings = settings_from()
    if not debug:
        root.setLevel(settings.log_level)
    return settings


def execute(job: t.Callable[[argparse.Namespace], int], args: argparse.Namespace, name: str) -> int:
    """Run ``job(args)`` through the one error path (module docstring); returns the exit code."""
    debug = bool(getattr(args, "debug", False))
    try:
        setup(debug)
        return int(job(args))
    except JobError as exc:
        log.error("%s: %s", name, exc, extra={"event": f"{name}_failed", "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        log.error("%s: unexpected %s: %s (run with --debug for the traceback)", name, type(exc).__name__,
                  str(exc)[:500], extra={"event": f"{name}_failed", "exit_code": int(ExitCode.ERROR)})
        return int(ExitCode.ERROR)


# ---- the model options (score, monitor, stream) and loading --------------------------------------

def load_model(args: argparse.Namespace, settings: Settings | None = None, model_uri: str | None = None) -> LoadedModel:
    """The model the options (or ``model_uri``) name, as the service loads it.

    :raises JobError: it cannot be loaded (exit 1), the message says which and why.
    """
    from ..model.loading import ModelLoadError
    from ..startup import load_model as choose_and_load

    uri = model_uri or getattr(args, "model_uri", None)
    path = None if model_uri else getattr(args, "model_path", None)
    try:
        return choose_and_load(settings or Settings(), path, uri)
    except ModelLoadError as exc:
        where = f"--model-uri {uri}" if uri else f"--model-path {path}" if path else "the model"
        raise JobError(f"cannot load {where}: {exc}") from None


def data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: where ``YYYY-MM`` months are read from (default ``TLC_DATA_DIR``, the one reading)."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of green_tripdata_YYYY-MM.parquet files; a YYYY-MM found there is read "
                             "locally instead of downloaded (default: TLC_DATA_DIR)")


def data_dir(args: argparse.Namespace, settings: Settings | None = None) -> Path:
    """``--data-dir`` if given, else ``TLC_DATA_DIR`` (``Settings.tlc_data_dir``)."""
    given = getattr(args, "data_dir", None)
    return Path(given) if given is not None else (settings or Settings()).tlc_data_dir


