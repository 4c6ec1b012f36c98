"""The one ``gate:`` line a person or CI job reads (stdout), for every gate and ``promote``."""

from __future__ import annotations


def summary(text: str) -> None:
    """Print ``gate: <text>`` at once (the logs say the same in JSON)."""
    print(f"gate: {text}", flush=True)
