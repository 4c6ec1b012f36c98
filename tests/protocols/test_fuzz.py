"""schemathesis against ``/openapi.json`` of the running service: no 5xx, nothing undocumented.

One test per documented operation; each draws up to ``FUZZ_EXAMPLES`` cases (default 50), half
fitting the schema and half not, and runs four checks on every answer. ``scripts/fuzz.sh``
(``make fuzz``) runs schemathesis' own CLI for longer, with every phase and check.

(schemathesis' ``pytest.from_fixture`` loader does not run on pytest 9, so the cases come from
``APIOperation.as_strategy`` under a plain ``hypothesis.given``.)
"""

from __future__ import annotations

import collections
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ride_duration import create_app
from ride_duration.protocols.openapi import build_spec
from tests.conftest import BUNDLED
from tests.support import running

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
ENV = {"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "MAX_BATCH_SIZE": "20", "MAX_CONTENT_LENGTH": "65536"}
# a small batch limit so generated arrays can reach it (413) without megabyte bodies

OPERATIONS = sorted((path, method.upper())
                    for path, item in build_spec(create_app({"model_path": ENV["MODEL_PATH"]}))["paths"].items()
                    for method in item)
CASES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory, ENV) as srv:
        yield srv
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations")
    assert "Traceback" not in srv.log_text(), srv.log_text()[-3000:]


@pytest.fixture(scope="module")
def api_schema(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    schema.config.update(base_url=server.url, request_timeout=10)
    return schema


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_operation(api_schema, path, method):
    operation = api_schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case):
        CASES[f"{method} {path}"] += 1
        case.call_and_validate(checks=CHECKS)

    fuzz()
