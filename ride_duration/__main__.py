"""``python -m ride_duration COMMAND``: the offline jobs (``--help`` lists them).

Each job module registers its own subcommand with ``add_parser(commands)``, which sets
``run`` (a function of the parsed arguments returning the exit code). Add a job by adding
its module to :data:`JOBS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import Settings
from .logs import setup_logging

JOBS = (
    "ride_duration.jobs.score",
    "ride_duration.jobs.monitor",
    "ride_duration.jobs.retrain",
    "ride_duration.jobs.environments",
    "ride_duration.stream.cli",
)
"""Modules with an ``add_parser(commands)`` function, in ``--help`` order."""

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ride_duration", description="Ride-duration offline jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in JOBS:
        importlib.import_module(name).add_parser(commands)
    return parser.parse_args(argv)

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(Settings().log_level)
    return int(args.run(args))

if __name__ == "__main__":
    sys.exit(main())
