"""The suite's own machinery, where a mistake would pass without a failure: coverage around imports
(tests/support.py ``UntracedLibraryImports``, installed by conftest.py), and the import guard that
keeps a test's service to the image's packages (``image_only_env``, tests/image_only)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import coverage
import pytest

from tests.support import ROOT, UntracedLibraryImports, image_only_env

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


def test_a_guarded_interpreter_cannot_import_what_the_image_lacks_and_libraries_see_it_missing():
    probe = textwrap.dedent("""\
        import importlib, json
        def can(name):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                return exc.name
            return True
        import sklearn.utils.fixes
        import importlib.util, importlib.metadata, mlflow.version
        print(json.dumps({n: can(n) for n in ("pandas", "pyarrow.parquet", "google.cloud.storage",
                                               "google.auth", "sklearn.linear_model", "mlflow.tracking")}
                         | {"sklearn_sees_pandas": sklearn.utils.fixes.pd is not None,
                            "sqlalchemy_spec": importlib.util.find_spec("sqlalchemy") is not None,
                            "skinny": mlflow.version.IS_MLFLOW_SKINNY,
                            "dists": sorted(d for d in ("pandas", "mlflow", "mlflow-skinny", "skops")
                                            if d in {x.metadata["Name"] for x in importlib.metadata.distributions()})}))
        """)
    env = image_only_env({"PATH": "/usr/bin:/bin"})
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "pandas": "pandas", "pyarrow.parquet": "pyarrow", "google.cloud.storage": "google.cloud",
        "google.auth": True, "sklearn.linear_model": True, "mlflow.tracking": True, "sklearn_sees_pandas": False,
        "sqlalchemy_spec": False, "skinny": True, "dists": ["mlflow-skinny", "skops"]}
