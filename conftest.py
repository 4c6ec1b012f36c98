"""Suite-wide policy: with STRICT_SKIPS=1 (set by .ci/run) a skipped test is a failure.

Locally, and on hosted runners without the TLC files, tests that need the real data or a
system package skip with the reason. The project's CI machine has both, so a skip there
means something is missing from the set-up, never a quiet pass.
"""

from __future__ import annotations

import os
import sys

import pytest

STRICT = os.environ.get("STRICT_SKIPS") == "1"


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
