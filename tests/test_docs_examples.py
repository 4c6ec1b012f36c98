"""Every ``console`` curl example in README.md and docs/ is run against real gunicorn and must match.

The convention is in tests/docs_examples.py and CONTRIBUTING.md. The service is the bundled model
with default settings (a fresh temp dir for Prometheus' multiprocess files), started once.
"""

from __future__ import annotations

import pytest

from tests import docs_examples
from tests.support import ROOT, running

EXAMPLES = docs_examples.collect(ROOT)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    env = {"MLFLOW_TRACKING_URI": "", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "LOG_LEVEL": "INFO"}
    with running(tmp_path_factory, env) as srv:
        yield srv.url.removeprefix("http://")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_shown_response_is_what_the_service_answers(example, service):
    actual = docs_examples.run(example, service)
    found = docs_examples.problems(example.expected, actual)
    assert found == [], f"{example.id}: `{example.command}`\n" + "\n".join(found)


def test_the_readme_and_the_api_page_have_checked_examples():
    files = {e.path for e in EXAMPLES}
    assert {"README.md", "docs/api.md", "docs/getting-started.md"} <= files
    assert len(EXAMPLES) >= 20


DOCTORED = """\
Text before.

```console
$ curl -s -XPOST localhost:9696/predict -H 'Content-Type: application/json' \\
       -d '{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}'
{"duration":26.5,"model_version":"lin_reg-a90973311177"}
$ curl -s -i localhost:9696/health
HTTP/1.1 200 OK
Content-Type: text/html
X-Request-ID: anything-at-all

{"status":"ok"}
```
"""


def test_a_doctored_block_fails_against_the_live_service(service):
    wrong_number, wrong_header = docs_examples.examples_in(DOCTORED, "doctored.md")
    assert wrong_number.line == 4 and wrong_header.line == 7
    found = docs_examples.problems(wrong_number.expected, docs_examples.run(wrong_number, service))
    assert len(found) == 1 and '"duration": 26.5' in found[0] and "54.94955046267648" in found[0]
    found = docs_examples.problems(wrong_header.expected, docs_examples.run(wrong_header, service))
    assert found == ["header Content-Type: shown 'text/html', actual 'application/json'"]


@pytest.mark.parametrize(("shown", "actual", "matches"), [
    ('{"a":1,"loaded_at":"2026-01-01T00:00:00Z"}', '{"a":1,"loaded_at":"2027-02-02T00:00:00Z"}', True),
    ('{"a":1}', '{"a":2}', False),
    ('{"a":1}', '{"a":1,"b":2}', False),
    ('{"a":1.0}', '{"a": 1}', True),
    ("3.17.2", "3.17.2\n", True),
    ("3.17.2", "3.18.0", False),
    ('{"sha256":"b8e2…","rows":73908}', '{"sha256":"b8e2c9496c5e","rows":73908}', True),
    ('{"sha256":"b8e2…","rows":73908}', '{"sha256":"b8e2c9496c5e","rows":73909}', False),
    ('{"time":"x","level":"INFO"}\n…', '{"time":"y","level":"INFO"}\nmore\nlines', True),
    ("HTTP/1.1 200 OK\nX-Request-ID: shown\n\n{}", "HTTP/1.1 200 OK\r\nX-Request-ID: other\r\nDate: d\r\n\r\n{}", True),
    ("HTTP/1.1 200 OK\n\n{}", "HTTP/1.1 503 SERVICE UNAVAILABLE\n\n{}", False),
    ("HTTP/1.1 200 OK\nAllow: GET\n\n{}", "HTTP/1.1 200 OK\n\n{}", False),
    ("HTTP/1.1 405 X\nAllow: POST, OPTIONS\n\n{}", "HTTP/1.1 405 X\nAllow: OPTIONS, POST\n\n{}", True),
    ("HTTP/1.1 405 X\nAllow: POST, OPTIONS\n\n{}", "HTTP/1.1 405 X\nAllow: OPTIONS, GET\n\n{}", False),
    ("HTTP/1.1 200 OK\n\n{}", "{}", False),
])
def test_comparison_masks_only_what_is_volatile(shown, actual, matches):
    assert (docs_examples.problems(shown, actual) == []) is matches


def test_parser_reads_only_console_curls_to_the_service():
    text = """\
```bash
$ curl -s localhost:9696/health
{"status":"wrong but not executed"}
```

````markdown
```console
$ curl -s localhost:9696/nested-is-an-illustration
```
````

```console
$ make serve
[ignored output]
$ curl -s localhost:5001/invocations
{"not": "this service"}
$ curl -s localhost:9696/v2 \\
    -H 'Accept: application/json'   # a comment with an apostrophe's quote
{"name":"ride-duration"}
$ curl -s localhost:9696/health
```
"""
    found = docs_examples.examples_in(text, "x.md")
    assert [(e.line, e.expected) for e in found] == [(17, '{"name":"ride-duration"}'), (20, "")]
    assert found[0].command.endswith("quote")
