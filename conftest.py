"""Suite-wide policy.

Skips: with STRICT_SKIPS=1 a skipped test is a failure. ``make test-python`` (so every pipeline
and ``make test``) sets it unless told ``STRICT_SKIPS=0``: where the suite runs for real, the TLC
files and the system packages are there (the hosted pipelines fetch the data first,
scripts/fetch-test-data.sh), so a skip means something is missing from the set-up, never a quiet
pass. A plain ``pytest`` run (a developer without the data) still skips, with the reason.

Parallel runs (pytest-xdist, ``make test-python`` runs ``-n $(PYTEST_WORKERS) --dist loadgroup``):
the tests of a module that share a module- or class-scoped fixture (a gunicorn, an MLflow server,
a broker, a built site) are put in one ``xdist_group`` named after the module, so the fixture
starts once, on one worker; every other test is scheduled on its own. A test file needs nothing
for this; an explicit ``@pytest.mark.xdist_group`` wins. Groups marked ``slow`` are handed out
first so the long ones do not end up alone at the tail of the run.

Longest first: xdist hands out work units (a group, or a test of its own) in collection order
(``make test-python`` passes ``--no-loadscope-reorder``; xdist would otherwise put the units with
the most tests first and every single test, however long, last). The order here is by expected
seconds per unit: the durations of the last runs (pytest's cache, ``ride_duration/durations``,
written after each run that has the cache), else 60 s for a test marked ``slow`` and 1 s for any
other; ties keep collection order.

Coverage (``make test-python`` runs pytest-cov): the standard library and installed packages are
imported with coverage's tracer set aside in the importing thread (tests/support.py
``UntracedLibraryImports``, installed below, before the test modules are collected); the project's
modules are traced as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import typing as t
from pathlib import Path

import pytest

from tests.support import UntracedLibraryImports

sys.meta_path.insert(0, UntracedLibraryImports())

STRICT = os.environ.get("STRICT_SKIPS") == "1"
SHARED_SCOPES = {"module", "class", "package"}
DURATIONS_KEY = "ride_duration/durations"
UNKNOWN_SLOW, UNKNOWN = 60.0, 1.0  # expected seconds of a test the cache has not seen yet
_measured: dict[str, float] = {}
_shared_mlflow: Path | None = None


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs[-1].scope in SHARED_SCOPES for defs in info.name2fixturedefs.values() if defs)


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_a_fixture(item):
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    # the longest work units first, each kept whole (its module fixtures start once) and in its own
    # order; xdist workers get the durations the controller read, so all collect the same order
    known = _known_durations(config)
    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        unit = _unit(item)
        default = UNKNOWN_SLOW if item.get_closest_marker("slow") is not None else UNKNOWN
        cost[unit] = cost.get(unit, 0.0) + known.get(item.nodeid, default)
        first.setdefault(unit, index)
    items.sort(key=lambda item: (-cost[_unit(item)], first[_unit(item)]))
    if getattr(config.option, "loadgroup", False):  # an xdist worker under --dist loadgroup
        _tag_groups(items)


def _tag_groups(items: list[pytest.Item]) -> None:
    """Put the ``@group`` tag on each grouped test's node id, where xdist's scheduler reads it.

    pytest-xdist 3.8 writes the tag to the old ``_nodeid`` field, which pytest 9.2 no longer reads
    (pytest-dev/pytest-xdist#1386): without this, ``--dist loadgroup`` groups nothing and a module's
    tests, with their module fixtures (a gunicorn, an MLflow server, a broker), are spread over
    every worker. A tag already there (an xdist that sets it itself) is left alone.
    """
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own tagging works
        return
    for item in items:
        unit = _unit(item)
        if unit.startswith("@") and hasattr(item, "_id") and not item.nodeid.endswith(unit):
            item._id = NodeId.parse(item.nodeid + unit)


def _known_durations(config: pytest.Config) -> dict[str, float]:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return workerinput.get(DURATIONS_KEY) or {}
    cache = getattr(config, "cache", None)
    return (cache.get(DURATIONS_KEY, {}) if cache is not None else {}) or {}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller hands each worker the same durations
def pytest_configure_node(node: t.Any) -> None:
    node.workerinput[DURATIONS_KEY] = _known_durations(node.config)
    from tests.mlflow_server import SHARED_DIR_KEY

    node.workerinput[SHARED_DIR_KEY] = str(_shared_mlflow_dir())


def _shared_mlflow_dir() -> Path:
    """The directory of the run's one ``mlflow server`` (tests/mlflow_server.py ``shared``): made by
    the xdist controller when it starts its first worker, removed by it after the last one."""
    global _shared_mlflow
    if _shared_mlflow is None:
        _shared_mlflow = Path(tempfile.mkdtemp(prefix="ride-duration-mlflow-"))
    return _shared_mlflow


def pytest_unconfigure(config: pytest.Config) -> None:
    """The xdist controller stops the shared ``mlflow server`` once every worker is done."""
    if _shared_mlflow is not None:
        from tests.mlflow_server import stop_shared

        stop_shared(_shared_mlflow)
        shutil.rmtree(_shared_mlflow, ignore_errors=True)


def _unit(item: pytest.Item) -> str:
    """xdist's work unit: the test's xdist_group, else the test alone."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return item.nodeid
    return "@" + str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))


def _plain_nodeid(nodeid: str) -> str:
    """A report's node id without the ``@group`` suffix xdist adds to grouped tests."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    nodeid = _plain_nodeid(report.nodeid)
    _measured[nodeid] = _measured.get(nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or a run without xdist) keeps this run's durations for the next run's order."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _measured:
        return
    known = cache.get(DURATIONS_KEY, {}) or {}
    known.update({nodeid: round(seconds, 2) for nodeid, seconds in _measured.items()})
    cache.set(DURATIONS_KEY, known)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under STRICT_SKIPS=1, where nothing may be missing: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Run a test marked ``untraced`` without coverage's tracer (tests/support.py ``untraced``: the
    real-data twins of traced tests; pytest-cov's ``no_cover`` has no effect in xdist workers).
    Fail the test that monkey-patches this process for gevent (e.g. by running gunicorn.conf.py
    in process): every later test would then run on a patched socket/ssl/threading."""
    from tests.support import untraced

    with untraced() if item.get_closest_marker("untraced") else contextlib.nullcontext():
        result = yield
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        raise AssertionError("this test monkey-patched the pytest process for gevent; "
                             "run gunicorn.conf.py in a child process instead")
    return result
