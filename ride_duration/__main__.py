"""``python -m ride_duration COMMAND``: the offline jobs (``--help`` lists them).

Each job module registers its own subcommand with ``add_parser(commands)``, which sets
``run`` (a function of the parsed arguments returning the exit code). Add a job by adding
its module to :data:`JOBS`. Every job runs through one error path
(:func:`ride_duration.jobs.cli.execute`): a bad flag, file, column or environment variable is
one line and exit 2, never a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .jobs.cli import Parser, add_debug, execute

JOBS = (
    "ride_duration.jobs.score",
    "ride_duration.jobs.monitor",
    "ride_duration.jobs.evaluate",
    "ride_duration.jobs.retrain",
    "ride_duration.jobs.environments",
    "ride_duration.stream.cli",
)
"""Modules with an ``add_parser(commands)`` function, in ``--help`` order."""

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="python -m ride_duration", description="Ride-duration offline jobs.")
    add_debug(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in JOBS:
        importlib.import_module(name).add_parser(commands)
    for command in commands.choices.values():
        add_debug(command)
    return parser.parse_args(argv)

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return execute(args.run, args, args.command)

if __name__ == "__main__":
    sys.exit(main())
