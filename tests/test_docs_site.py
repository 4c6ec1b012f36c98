"""The docs site builds with ``mkdocs build --strict`` (no warning at all), offline, and its generated
parts come from the code; the README stays short and its links resolve."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ride_duration.config import Settings
from tests.support import ROOT
from tests.test_architecture import ALLOWED

MKDOCS = str(Path(sys.executable).with_name("mkdocs"))
spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([MKDOCS, "build", "--strict", "-f", str(config), "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line]
    assert warnings == []
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_configuration_page_lists_every_setting(site):
    html = page(site, "configuration")
    missing = [name.upper() for name in Settings.model_fields if f"<code>{name.upper()}</code>" not in html]
    assert missing == []


def test_architecture_page_renders_the_enforced_table(site):
    html = page(site, "architecture")
    for room, may in ALLOWED.items():
        others = ", ".join(sorted(may - {room})) or "nothing else in the package"
        row = rf"<strong><code>{re.escape(room)}</code></strong></td>\s*<td>.*?</td>\s*<td>{others}</td>"
        assert re.search(row, html), room
    assert html.count('class="mermaid"') >= 3


def test_contributing_page_is_the_contributing_file(site):
    html = page(site, "contributing")
    headings = re.findall(r"^## (.+)$", (ROOT / "CONTRIBUTING.md").read_text(), re.MULTILINE)
    assert headings and all(h in html for h in headings)
    assert 'href="../architecture/"' in html  # docs/architecture.md, made relative for the site


def test_pages_load_no_web_fonts(site):
    assert all("fonts.googleapis.com" not in p.read_text() for p in site.glob("**/*.html"))


def test_a_broken_link_fails_the_strict_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the API](api.md#no-such-anchor) and [gone](gone.md).\n")
    (docs / "api.md").write_text("# API\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:")[0]
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("scripts/mkdocs_hooks.py", str(ROOT / "scripts" / "mkdocs_hooks.py"))
    (tmp_path / "mkdocs.yml").write_text(config)
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "gone.md" in done.stderr and "no-such-anchor" in done.stderr


def test_a_setting_without_docstring_is_found(tmp_path):
    source = tmp_path / "config.py"
    source.write_text('class Settings:\n    a: int = 1\n    """Documented."""\n    b: str | None = None\n')
    assert hooks.attribute_docstrings("Settings", source) == {"a": ("int", "Documented."), "b": ("str | None", "")}


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make serve" in text and "make test" in text
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if not (ROOT / target).exists() and Path(target).name not in hooks.PENDING:
            broken.append(target)
    assert broken == []
