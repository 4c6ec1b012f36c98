"""The live-evidence flags ``retrain`` and ``promote`` share: ``--require-shadow-evidence N`` and
``--shadow-evidence report.json`` (the rule: :mod:`ride_duration.registry.shadow_evidence`)."""

from __future__ import annotations

import argparse
import typing as t
from pathlib import Path

from ..errors import BadInput
from . import cli

if t.TYPE_CHECKING:
    from ..registry.shadow_evidence import Report


def add_options(parser: argparse.ArgumentParser, moved: str) -> None:
    """The two flags; ``moved`` says (in the help) which version must have the evidence."""
    parser.add_argument("--require-shadow-evidence", type=cli.positive_int, default=None, metavar="N",
                        help=f"promote {moved} only if --shadow-evidence compares it, as the shadow challenger, "
                             "with the current version of the target alias on at least N live rides and its "
                             "live RMSE is lower (else exit 3); the decision and the numbers are tagged on it "
                             "(shadow_evidence.*)")
    parser.add_argument("--shadow-evidence", type=Path, default=None, metavar="REPORT_JSON",
                        help="report.json written by 'python -m ride_duration evaluate' (needs "
                             "--require-shadow-evidence; without it the evidence is missing: exit 3)")


def read(args: argparse.Namespace) -> Report | None:
    """``--shadow-evidence``, read (None when not given).

    :raises BadInput: given without ``--require-shadow-evidence``, or missing, unreadable or not an
        ``evaluate`` report (the message names the flag and the file).
    """
    if args.shadow_evidence is None:
        return None
    if args.require_shadow_evidence is None:
        raise BadInput(f"--shadow-evidence {args.shadow_evidence}: needs --require-shadow-evidence N "
                       "(the fewest live rides the challenger must be compared on)")
    from ..registry.shadow_evidence import read_report

    return read_report(args.shadow_evidence)


def source(args: argparse.Namespace) -> str | None:
    """The report's path as the tags and logs record it."""
    return None if args.shadow_evidence is None else str(args.shadow_evidence)
