"""schemathesis CLI hooks for ``scripts/fuzz.sh``: the length rules of ``tests/fuzz_rules.py``."""

from tests.fuzz_rules import register_hook

register_hook()
