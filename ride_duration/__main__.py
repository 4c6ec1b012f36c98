"""``python -m ride_duration score --input rides.parquet --output predictions.parquet`` (see ``score.py``);
``python -m ride_duration promote --from dev --to test`` (see ``jobs/environments.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Settings
from .logs import setup_logging
from .score import DEFAULT_CHUNK_ROWS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ride_duration", description="Ride-duration batch tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a TLC parquet file into a predictions parquet file",
                                description="Score every row of a TLC parquet file with the service's model "
                                            "and features, streaming in chunks.")
    score.add_argument("--input", type=Path, required=True, help="TLC trip parquet (green, yellow or FHV)")
    score.add_argument("--output", type=Path, required=True, help="predictions parquet to write")
    model = score.add_mutually_exclusive_group()
    model.add_argument("--model-path", type=Path, default=None,
                       help="model pickle (sha256 from MODEL_SHA256 or metadata.json beside it); "
                            "default: MODEL_PATH or the bundled model")
    model.add_argument("--model-uri", default=None,
                       help="registry URI such as models:/nyc-taxi-ride-duration@production (MLFLOW_TRACKING_URI)")
    score.add_argument("--chunk-rows", type=positive_int, default=DEFAULT_CHUNK_ROWS,
                       help=f"rows per chunk (default {DEFAULT_CHUNK_ROWS})")
    add_promote_command(commands)
    return parser.parse_args(argv)


def add_promote_command(commands: argparse._SubParsersAction) -> None:
    """``promote`` (ride_duration.jobs.environments registers itself; sets ``run``)."""
    from .jobs import environments

    environments.add_parser(commands)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(Settings().log_level)
    if "run" in args:
        return args.run(args)
    from . import score

    return score.run(args)


if __name__ == "__main__":
    sys.exit(main())
