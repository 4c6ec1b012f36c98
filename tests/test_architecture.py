"""The package's layering: each room imports only the rooms below it, and no module imports itself back.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import
is still a dependency a reader has to follow. The rules are the table in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "ride_duration"
BASE = {"config", "errors", "features", "schemas", "logs"}
ALLOWED = {
    "base": {"base"},
    "model": {"base", "model"},
    "registry": {"base", "model", "registry"},
    "startup": {"base", "model", "registry"},
    "web": {"base", "model", "startup", "web"},
    "protocols": {"base", "model", "startup", "web", "protocols"},
    "jobs": {"base", "model", "registry", "startup", "stream", "jobs"},
    "stream": {"base", "model", "registry", "startup", "stream"},
    "app": {"base", "startup", "web", "protocols"},
    "__init__": {"base", "app"},
    "__main__": {"base", "jobs", "stream"},
}
"""What each room may import. ``app`` (the factory) is the only module that composes web and protocols."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """``ride_duration.web.api`` -> ``web``; a base module -> ``base``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return "base" if parts[1] in BASE else parts[1]


def imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (relative imports resolved)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ride_duration")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ride_duration"):
                continue
            for alias in node.names:  # ``from . import api`` names a module, not an attribute
                candidate = f"{target}.{alias.name}"
                found.add(candidate if resolves(candidate) else target)
    found.discard(module)
    return found


def resolves(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_module_imports_only_rooms_below_it(module: str):
    actual = {dep for dep in GRAPH[module] if room(dep) not in ALLOWED[room(module)]}
    expected: set[str] = set()
    assert actual == expected, f"{module} ({room(module)}) may import only {sorted(ALLOWED[room(module)])}"


def test_no_import_cycle():
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for dep in GRAPH.get(node, ()):
                if dep == start:
                    return trail + [start]
                if dep not in seen and dep in GRAPH:
                    seen.add(dep)
                    stack.append((dep, trail + [dep]))
        return None

    cycles = [cycle for cycle in map(cycle_from, GRAPH) if cycle]
    assert cycles == []


def test_every_room_is_in_the_table():
    assert {room(module) for module in GRAPH} <= set(ALLOWED)


def test_the_checker_sees_a_violation():
    """The rules bite: the registry importing the web layer would be reported."""
    assert "web" not in ALLOWED[room("ride_duration.registry.watch")]
    assert room("ride_duration.web.api") == "web"
    assert "ride_duration.startup" in GRAPH["ride_duration.web.api"]
