"""The suite's own machinery, where a mistake would pass without a failure: coverage around imports
(tests/support.py ``UntracedLibraryImports``, installed by conftest.py)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import coverage
import pytest

from tests.support import UntracedLibraryImports

LIBRARY, PROJECT = "harness_probe_library", "harness_probe_project"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A "library" module (in a directory the finder is told is a library) that records the tracer it
    ran under, and a "project" module that imports it inside a function and goes on afterwards."""
    library, project = tmp_path / "site-packages", tmp_path / "project"
    library.mkdir()
    project.mkdir()
    (library / f"{LIBRARY}.py").write_text("import sys\n\nTRACER = sys.gettrace()\n")
    (project / f"{PROJECT}.py").write_text(textwrap.dedent(f"""\
        BEFORE = 1


        def load():
            import {LIBRARY}

            seen = {LIBRARY}.TRACER
            return seen


        SEEN = load()
        AFTER = 2
        """))
    monkeypatch.syspath_prepend(str(library))
    monkeypatch.syspath_prepend(str(project))
    finder = UntracedLibraryImports()
    monkeypatch.setattr(finder, "LIBRARIES", (str(library),))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    yield project / f"{PROJECT}.py"
    for name in (LIBRARY, PROJECT):
        sys.modules.pop(name, None)


def test_a_library_runs_untraced_and_the_code_that_imported_it_is_still_measured(probe: Path) -> None:
    cov = coverage.Coverage(data_file=None, config_file=False, include=[str(probe)])
    cov.start()  # on top of pytest-cov's, when there is one: stopping it resumes that one
    try:
        project = importlib.import_module(PROJECT)
    finally:
        cov.stop()
    _, statements, _, missing, _ = cov.analysis2(str(probe))

    assert project.SEEN is None  # the library module ran with no tracer
    # the rest of the importing function and of the module were measured: stopping and restarting
    # coverage around the import lost them (279 statements of the package)
    assert len(statements) == 7 and missing == []
    library = sys.modules[LIBRARY]
    assert type(library.__loader__) is type(library.__spec__.loader) is importlib.machinery.SourceFileLoader


def test_without_coverage_nothing_is_wrapped(probe: Path) -> None:
    tracer = sys.gettrace()
    sys.settrace(None)  # pytest-cov's tracer, if any, set aside for this thread (put back below)
    try:
        importlib.import_module(PROJECT)
    finally:
        sys.settrace(tracer)
    assert type(sys.modules[LIBRARY].__spec__.loader) is importlib.machinery.SourceFileLoader
