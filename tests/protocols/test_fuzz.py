"""schemathesis against ``/openapi.json`` of the running service: every check, every operation.

One test per documented operation; each draws up to ``FUZZ_EXAMPLES`` cases (default 25),
half fitting the schema (positive) and half not (negative), from a fixed seed, and runs all
of schemathesis' checks on every answer, ``positive_data_acceptance`` (a schema-valid request
must get a 2xx) and ``negative_data_rejection`` (a schema-invalid one a 4xx) included, with no
exception for any operation. The schema says exactly what the service accepts; the length rules
it cannot state (``x-length-rules``) are made true in positive cases by ``tests.protocols.fuzz_rules``.
``scripts/fuzz.sh`` (``make fuzz``) runs schemathesis' own CLI the same way, for longer (1,000 cases
per operation and phase). 25 here (it was 40) keeps every operation's positive and negative
directions and every check in ``make test`` at about a third less time; ``FUZZ_EXAMPLES=200`` runs
this test longer.

(schemathesis' ``pytest.from_fixture`` loader does not run on pytest 9, so the cases come from
``APIOperation.as_strategy`` under a plain ``hypothesis.given``.)
"""

from __future__ import annotations

import collections
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from ride_duration import create_app
from ride_duration.protocols.openapi import build_spec
from tests.conftest import BUNDLED
from tests.protocols.fuzz_rules import apply_to_case
from tests.support import ROOT, running

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
MAX_BATCH = 20  # small, so generated arrays reach it (413 in the negative direction) without megabyte bodies
ENV = {"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "MAX_BATCH_SIZE": str(MAX_BATCH), "MAX_CONTENT_LENGTH": "65536"}
STATEFUL: set[str] = set()

load_all_checks()
CHECKS_RUN = [c for c in CHECKS.get_all() if getattr(c, "__name__", "") not in STATEFUL]
OPERATIONS = sorted((path, method.upper())
                    for path, item in build_spec(create_app({"model_path": ENV["MODEL_PATH"],
                                                             "max_batch_size": MAX_BATCH}))["paths"].items()
                    for method in item)
CASES: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (operation, mode, status class)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory, ENV) as srv:
        yield srv
    modes: collections.Counter[str] = collections.Counter()
    for (_, mode, status), n in CASES.items():
        modes[mode] += n
        modes[f"{mode} {status}"] += n
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len({op for op, _, _ in CASES})} operations, "
          f"0 failures: {dict(sorted(modes.items()))}; checks: {', '.join(sorted(c.__name__ for c in CHECKS_RUN))}")
    assert "Traceback" not in srv.log_text(), srv.log_text()[-3000:]


@pytest.fixture(scope="module")
def api_schema(server):
    config = schemathesis.Config.from_path(ROOT / "scripts" / "schemathesis.toml")  # the CLI run's settings
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)
    schema.config.update(base_url=server.url, request_timeout=10)
    return schema


def test_every_check_is_run():
    names = {c.__name__ for c in CHECKS_RUN}
    assert {"positive_data_acceptance", "negative_data_rejection", "not_a_server_error",
            "response_schema_conformance", "status_code_conformance", "content_type_conformance"} <= names


@pytest.mark.untraced  # schemathesis and hypothesis against the gunicorn server: no project code runs in here
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_operation(api_schema, path, method):
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE).map(apply_to_case),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @seed(SEED)
    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=False)
    def fuzz(case):
        response = case.call_and_validate(checks=CHECKS_RUN)
        CASES[(f"{method} {path}", case.meta.generation.mode.value, f"{response.status_code // 100}xx")] += 1

    fuzz()
    if operation.body:  # the positive direction was really exercised: schema-valid bodies were answered 2xx
        assert CASES[(f"{method} {path}", "positive", "2xx")] > 0, CASES
