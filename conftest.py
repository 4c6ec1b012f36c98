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
"""

from __future__ import annotations

import os
import sys

import pytest

STRICT = os.environ.get("STRICT_SKIPS") == "1"
SHARED_SCOPES = {"module", "class", "package"}


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
    # modules with a slow test first, each module kept whole (its module fixtures start once) and in
    # its own order; a stable sort, so every xdist worker collects the same order
    slow = {_module(item) for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: _module(item) not in slow)


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
    """Fail the test that monkey-patches this process for gevent (e.g. by running gunicorn.conf.py
    in process): every later test would then run on a patched socket/ssl/threading."""
    result = yield
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        raise AssertionError("this test monkey-patched the pytest process for gevent; "
                             "run gunicorn.conf.py in a child process instead")
    return result
