"""``/openapi.json``: a valid OpenAPI 3.1 document covering every route, built from the validators."""

from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from ride_duration.protocols import openapi
from ride_duration.schemas import RIDE

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


@pytest.mark.untraced  # openapi-spec-validator walking the document: library code only
def test_spec_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)  # raises on the first problem


def test_every_route_is_documented(app, spec):
    routes = openapi.documented_routes(app)
    documented = {(path, method) for path, item in spec["paths"].items() for method in item if method in METHODS}
    actual = {(openapi.openapi_path(rule), method) for rule, method in routes}
    assert actual - documented == set(), "routes missing from the OpenAPI document"
    assert documented - actual == set(), "documented operations the app does not route"
    assert len(actual) >= 20


def test_request_schemas_are_the_validators(spec):
    """The document's Ride is what schemas.RIDE validates with, not a hand-written copy."""
    expected = RIDE.json_schema(ref_template="#/components/schemas/{model}")
    assert spec["components"]["schemas"]["Ride"] == expected


def test_every_error_status_has_a_body_schema(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert "200" in op["responses"], (method, path)
            if method == "post":
                assert {"400", "413", "415"} <= set(op["responses"]), (method, path)
            for status, response in op["responses"].items():
                assert response.get("content"), (method, path, status)
                assert "X-Request-ID" in response["headers"]


def _examples(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                values = [e["value"] for e in content.get("examples", {}).values()]
                values += [content["example"]] if "example" in content else []
                values += content["schema"].get("examples", [])
                ref = content["schema"].get("$ref")
                if ref:
                    values += spec["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("examples", [])
                for value in values:
                    yield path, method, media, value


def test_request_examples_are_accepted(client, spec):
    """Every example in the document (the ones /docs pre-fills) gets a 200 from the service."""
    seen = 0
    version = client.get("/model").json["version"]
    name = client.get("/v2/models/nyc-taxi-ride-duration").json["name"]
    for path, method, media, value in _examples(spec):
        url = path.replace("{name}", name).replace("{version}", version)
        if media == "application/json":
            response = client.open(url, method=method.upper(), json=value)
        else:
            response = client.open(url, method=method.upper(), data=value, content_type=media)
        assert response.status_code == 200, (url, media, response.get_data(as_text=True))
        seen += 1
    assert seen >= 6


def test_responses_match_their_documented_schema(client, spec):
    """A few real answers, validated against the document the way a generated client would."""
    resolver_spec = {"components": spec["components"]}

    def check(path, method, response):
        schema = spec["paths"][path][method]["responses"][str(response.status_code)]["content"]
        body_schema = schema[response.mimetype]["schema"]
        jsonschema.validate(response.json, {**body_schema, **resolver_spec})

    check("/predict", "post", client.post("/predict", json={"PULocationID": 1}))
    check("/predict", "post", client.post("/predict", json=[{"PULocationID": 1, "DOLocationID": 2,
                                                              "trip_distance": 3}]))
    check("/ready", "get", client.get("/ready"))
    check("/model", "get", client.get("/model"))
    check("/invocations", "post", client.post("/invocations", json={"inputs": [{}]}))
    check("/v2/models/{name}", "get", client.get("/v2/models/unknown"))


def test_refusals_a_long_fuzz_run_met_are_declared(client, spec):
    """An empty CSV body (400), a V2 shape beyond int64 (400) and a batch over MAX_BATCH_SIZE (413): each
    status is a documented response of its operation, the body has the documented shape, and the request
    is outside the request schema (so a fuzzer counts the answer as a rejection, never as an acceptance)."""
    resolver = {"components": spec["components"]}
    limit = client.application.config.get("MAX_BATCH_SIZE") or 10_000
    tensors = [{"name": "PULocationID", "shape": [2**64], "datatype": "INT64", "data": [1]},
               {"name": "DOLocationID", "shape": [1], "datatype": "INT64", "data": [1]},
               {"name": "trip_distance", "shape": [1], "datatype": "FP64", "data": [1.0]}]
    cases = [
        ("/invocations", "text/csv", "", client.post("/invocations", data=b"", content_type="text/csv"), 400),
        ("/v2/models/{name}/infer", "application/json", {"inputs": tensors},
         client.post("/v2/models/nyc-taxi-ride-duration/infer", json={"inputs": tensors}), 400),
        ("/predict", "application/json", [RIDE_ONE] * (limit + 1),
         client.post("/predict", json=[RIDE_ONE] * (limit + 1)), 413),
    ]
    for path, media, body, response, status in cases:
        operation = spec["paths"][path]["post"]
        assert response.status_code == status, (path, response.get_data(as_text=True))
        documented = operation["responses"][str(status)]["content"][response.mimetype]["schema"]
        jsonschema.validate(response.json, {**documented, **resolver})
        request_schema = operation["requestBody"]["content"][media]["schema"]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, {**request_schema, **resolver})


RIDE_ONE = {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1.0}


def test_docs_page_is_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page must not load anything remote"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", html)
    assert {"docs/swagger-ui-bundle.js", "docs/swagger-ui.css", "docs/swagger-initializer.js"} <= set(assets)
    for asset in assets:
        response = client.get("/" + asset)
        assert response.status_code == 200, asset
        assert len(response.data) > 100 or asset.endswith(".png"), asset
    assert "openapi.json" in client.get("/docs/swagger-initializer.js").get_data(as_text=True)
    assert client.get("/docs/index.html").status_code == 404  # the package's demo page points at a remote spec
