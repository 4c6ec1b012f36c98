"""Checked examples: the ``console`` blocks of README.md and docs/**/*.md, run against a live service.

The convention (written down for authors in CONTRIBUTING.md, "Examples that are checked"):

* In a fenced block whose language is ``console``, every command line (``$ curl …``) that calls
  ``localhost:9696`` is executed with bash, ``localhost:9696`` rewritten to the test server's port.
  A command may continue over several lines (a trailing ``\\`` or an open quote).
* The lines after the command, up to the next ``$`` line or the end of the block, are its expected
  output. ``$`` commands that are not a curl to ``localhost:9696`` are left alone.
* Volatile parts are masked on both sides before comparing: the headers in :data:`VOLATILE_HEADERS`,
  the JSON fields in :data:`VOLATILE_KEYS`, and wherever the author wrote ``…`` (any text).
* ``curl -i`` output: the status line must match, each header shown must be present with that value
  (headers not shown are not checked; ``Allow`` and ``Vary`` in any order), then the bodies are
  compared. JSON bodies compare as JSON.
* Examples that need another set-up (a registry, compose, a cluster) go in a ``shell`` or ``bash``
  block: those are never executed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import subprocess
import typing as t
from pathlib import Path

HOST = "localhost:9696"
CHECKED_LANGUAGE = "console"
VOLATILE_HEADERS = frozenset({"x-request-id", "date"})
LIST_HEADERS = frozenset({"allow", "vary"})
"""Compared as sets: werkzeug builds ``Allow`` from a set, so its order changes from process to process."""
VOLATILE_KEYS = frozenset({"request_id", "loaded_at", "time", "timestamp", "latency_ms", "pid", "at",
                           "last_check", "started_at", "uptime_seconds"})
MASK = "<volatile>"
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})
"""Left out of the commands' environment: the examples talk to loopback, never through a proxy."""
ELLIPSIS = "…"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_JSON_VOLATILE = re.compile(r'"(' + "|".join(sorted(VOLATILE_KEYS)) + r')"\s*:\s*("(?:[^"\\]|\\.)*"|[-+0-9.eE]+|null)')


@dataclasses.dataclass(frozen=True)
class Example:
    """One checked command and the output shown under it."""

    path: str
    line: int
    command: str
    expected: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def blocks(text: str) -> t.Iterator[tuple[str, int, list[str]]]:
    """Fenced blocks as (language, line number of the first content line, lines); nested fences stay inside."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, indent = opened["fence"], len(opened["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        yield opened["lang"], i + 2, body
        i = j + 1


def complete(command: str) -> bool:
    """Whether a shell command is finished (no trailing backslash, no open quote)."""
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def examples_in(text: str, path: str) -> list[Example]:
    """The checked examples of one Markdown file."""
    found: list[Example] = []
    for lang, first, lines in blocks(text):
        if lang != CHECKED_LANGUAGE:
            continue
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            start = i
            command = lines[i][2:]
            while not complete(command) and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]
            i += 1
            output: list[str] = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            if command.lstrip().startswith("curl ") and HOST in command:
                found.append(Example(path, first + start, command, "\n".join(output)))
    return found


def collect(root: Path) -> list[Example]:
    """Every checked example of README.md, CONTRIBUTING.md and docs/**/*.md."""
    files = [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").glob("**/*.md"))]
    found: list[Example] = []
    for path in files:
        if path.exists():
            found += examples_in(path.read_text(), str(path.relative_to(root)))
    return found


def run(example: Example, base: str, timeout: float = 30.0) -> str:
    """Execute the command with ``localhost:9696`` pointing at ``base`` (host:port); returns its stdout.

    :raises AssertionError: the command failed (its stderr is in the message).
    """
    command = example.command.replace(HOST, base)
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{example.id}: exit {done.returncode}: {done.stderr.strip()}"
    return done.stdout.replace(base, HOST)


def normalize(text: str) -> str:
    text = text.replace("\r\n", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def mask_json(value: t.Any) -> t.Any:
    if isinstance(value, dict):
        return {k: MASK if k in VOLATILE_KEYS else mask_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    return value


def mask_text(text: str) -> str:
    return _JSON_VOLATILE.sub(lambda m: f'"{m[1]}":"{MASK}"', text)


def body_problems(expected: str, actual: str) -> list[str]:
    """Differences between two bodies: JSON structurally, other text with ``…`` as a wildcard."""
    try:
        shown, got = (json.loads(expected), json.loads(actual)) if ELLIPSIS not in expected else (None, None)
    except ValueError:
        shown = None
    if shown is not None:
        if mask_json(shown) == mask_json(got):
            return []
        return diff(json.dumps(mask_json(shown), indent=1), json.dumps(mask_json(got), indent=1))
    shown_text, got_text = mask_text(expected), mask_text(actual)
    pattern = ".*?".join(re.escape(part) for part in shown_text.split(ELLIPSIS))
    if re.fullmatch(pattern, got_text, re.DOTALL):
        return []
    return diff(shown_text, got_text)


def diff(expected: str, actual: str) -> list[str]:
    lines = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "shown", "actual", lineterm="")
    return ["\n".join(list(lines)[:60])]


def split_http(text: str) -> tuple[str, dict[str, str], list[tuple[str, str]], str]:
    """``curl -i`` output -> status line, headers (lower-case names), header lines as shown, body."""
    head, _, body = text.partition("\n\n")
    status, *header_lines = head.split("\n")
    pairs = [(name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in header_lines)]
    return status, {name.lower(): value for name, value in pairs}, pairs, body


def same_header(name: str, shown: str, actual: str) -> bool:
    if name.lower() in LIST_HEADERS:
        return {v.strip() for v in shown.split(",")} == {v.strip() for v in actual.split(",")}
    return shown == actual


def problems(expected: str, actual: str) -> list[str]:
    """Why ``actual`` does not match what the docs show (empty: it matches)."""
    expected, actual = normalize(expected), normalize(actual)
    if not expected.startswith("HTTP/"):
        return body_problems(expected, actual)
    if not actual.startswith("HTTP/"):
        return [f"expected an HTTP response (curl -i), got: {actual[:200]}"]
    shown_status, _, shown_headers, shown_body = split_http(expected)
    status, headers, _, body = split_http(actual)
    found = []
    if shown_status != status:
        found.append(f"status line: shown {shown_status!r}, actual {status!r}")
    for name, value in shown_headers:
        if name.lower() not in headers:
            found.append(f"header {name} shown but not sent")
        elif name.lower() not in VOLATILE_HEADERS and not same_header(name, value, headers[name.lower()]):
            found.append(f"header {name}: shown {value!r}, actual {headers[name.lower()]!r}")
    return found + body_problems(shown_body.strip("\n"), body.strip("\n"))
