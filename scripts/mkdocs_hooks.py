"""mkdocs hooks (mkdocs.yml ``hooks:``): the parts of the docs that are generated from the code.

Markers in a page are replaced at build time, so these tables cannot drift from the code:

* ``<!-- generated: settings -->``: every :class:`ride_duration.config.Settings` field (env var,
  type, default, docstring). A field without a docstring is a build warning (``--strict`` fails).
* ``<!-- generated: layers -->``: what each room of the package may import, from
  ``ALLOWED`` in tests/test_architecture.py (the test that enforces it).
* ``<!-- generated: modules -->``: every module of the package with the first line of its docstring.
* ``<!-- include: CONTRIBUTING.md -->``: a file of the repository, its ``docs/`` links made relative.

Also: every environment variable ``gunicorn.conf.py`` reads must be named on the page that has
the settings table.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ride_duration"
log = logging.getLogger("mkdocs.hooks.generated")

_MARKER = re.compile(r"<!-- (generated|include): ([\w./-]+) -->")


# --- settings ---------------------------------------------------------------------------------
def attribute_docstrings(cls_name: str, source: Path) -> dict[str, tuple[str, str]]:
    """``{field: (annotation source, docstring)}`` for the annotated attributes of a class."""
    tree = ast.parse(source.read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name).body
    found: dict[str, tuple[str, str]] = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                doc = " ".join(following.value.value.split())
            found[node.target.id] = (ast.unparse(node.annotation), doc)
    return found


def env_names(name: str, field: t.Any) -> list[str]:
    alias = field.validation_alias
    if alias is None:
        return [name.upper()]
    if isinstance(alias, str):
        return [alias.upper()]
    return [str(choice).upper() for choice in getattr(alias, "choices", [alias])]


def show_default(field: t.Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return "computed"
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, Path):
        value = value.relative_to(ROOT) if value.is_relative_to(ROOT) else value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def constraints(field: t.Any) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = [f"{sign} {getattr(m, op)}" for m in field.metadata for op, sign in signs.items()
             if getattr(m, op, None) is not None]
    return f" ({', '.join(parts)})" if parts else ""


def settings_table() -> str:
    sys.path.insert(0, str(ROOT))
    from ride_duration.config import Settings

    docs = attribute_docstrings("Settings", PACKAGE / "config.py")
    env = {name: env_names(name, field)[0] for name, field in Settings.model_fields.items()}

    def markdown(text: str) -> str:  # reST ``field`` -> `ENV_NAME`; pipes would split the cell
        text = re.sub(r"``([^`]+)``", lambda m: f"`{env.get(m[1], m[1])}`", text)
        return text.replace("|", "\\|")

    rows = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        annotation, doc = docs.get(name, (str(field.annotation), ""))
        if not doc:
            log.warning("Settings.%s has no docstring: add one below the field in ride_duration/config.py", name)
        names = ", ".join(f"`{n}`" for n in env_names(name, field))
        kind = annotation.replace(" | ", " or ")
        rows.append(f"| {names} | {kind}{constraints(field)} | {show_default(field)} | {markdown(doc)} |")
    return "\n".join(rows)


def gunicorn_env() -> set[str]:
    """Environment variables gunicorn.conf.py reads (``os.environ.get``/``os.environ[...]``/``os.getenv``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / "gunicorn.conf.py").read_text())):
        target = None
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} and node.args:
            target = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            target = node.slice
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            found.add(target.value)
    return found


# --- architecture -----------------------------------------------------------------------------
def architecture_rules() -> tuple[set[str], dict[str, set[str]]]:
    """``BASE`` and ``ALLOWED`` as written in tests/test_architecture.py (read, not imported)."""
    values: dict[str, t.Any] = {}
    for node in ast.parse((ROOT / "tests" / "test_architecture.py").read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in {"BASE", "ALLOWED"}:
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values["BASE"], values["ALLOWED"]


def rst_to_markdown(text: str) -> str:
    """The reST bits docstrings use: ``code`` and :role:`~dotted.Name` become `code` and `Name`."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m[1].rsplit('.', 1)[-1]}`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("|", "\\|")


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return rst_to_markdown(" ".join(doc.split("\n\n")[0].split()))


def room_of(path: Path, base: set[str]) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) == 1:
        return "base" if parts[0] in base else parts[0]
    return parts[0]


def layers_table() -> str:
    base, allowed = architecture_rules()
    rows = ["| room | holds | may import |", "|---|---|---|"]
    for room, may in allowed.items():
        if room == "base":
            holds = ", ".join(f"`{m}.py`" for m in sorted(base))
        elif (PACKAGE / room / "__init__.py").exists():
            holds = f"`{room}/`: {first_line(PACKAGE / room / '__init__.py')}"
        else:
            holds = f"`{room}.py`: {first_line(PACKAGE / f'{room}.py')}"
        others = sorted(may - {room})
        rows.append(f"| **`{room}`** | {holds} | {', '.join(others) or 'nothing else in the package'} |")
    return "\n".join(rows)


LABELS = {"__init__": "ride_duration/__init__.py", "__main__": "__main__.py", "app": "app.py",
          "startup": "startup.py"}


def layers_diagram() -> str:
    """A mermaid flowchart of ``ALLOWED``: one arrow per allowed dependency (base, which all may import, left out)."""
    base, allowed = architecture_rules()
    lines = ["```mermaid", "flowchart TD"]
    for room in allowed:
        label = LABELS.get(room, f"{room}/") if room != "base" else "base: " + ", ".join(sorted(base))
        lines.append(f'    {room.strip("_") or room}["{label}"]')
    for room, may in allowed.items():
        for target in sorted(may - {room, "base"}, key=list(allowed).index):
            lines.append(f"    {room.strip('_')} --> {target.strip('_')}")
    lines.append("```")
    return "\n".join(lines)


def modules_table() -> str:
    base, _ = architecture_rules()
    rows = ["| module | room | what it is |", "|---|---|---|"]
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue
        rel = path.relative_to(ROOT)
        rows.append(f"| `{rel}` | {room_of(path, base)} | {first_line(path)} |")
    return "\n".join(rows)


# --- includes ---------------------------------------------------------------------------------
def include(name: str) -> str:
    text = (ROOT / name).read_text()
    return re.sub(r"\]\(docs/", "](", text)


GENERATORS: dict[str, t.Callable[[], str]] = {
    "settings": settings_table,
    "layers": layers_table,
    "layers-diagram": layers_diagram,
    "modules": modules_table,
}


def on_page_markdown(markdown: str, page: t.Any, config: t.Any, files: t.Any) -> str:
    def replace(match: re.Match[str]) -> str:
        kind, name = match[1], match[2]
        if kind == "include":
            return include(name)
        if name not in GENERATORS:
            log.warning("%s: unknown generated block %r", page.file.src_uri, name)
            return match[0]
        return GENERATORS[name]()

    has_settings = "<!-- generated: settings -->" in markdown
    markdown = _MARKER.sub(replace, markdown)
    if has_settings:
        missing = sorted(name for name in gunicorn_env() if f"`{name}`" not in markdown)
        for name in missing:
            log.warning("%s: gunicorn.conf.py reads %s but the page does not name it", page.file.src_uri, name)
    return markdown
