"""schemathesis CLI hooks for ``scripts/fuzz.sh``: the length rules of ``tests/protocols/fuzz_rules.py``."""

from tests.protocols.fuzz_rules import register_hook

register_hook()
