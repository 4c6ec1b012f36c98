"""Open Inference Protocol V2 against the real service (gunicorn), spoken to by Triton's HTTP client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.conftest import BUNDLED
from tests.support import Server, post_json, running

NAME = "nyc-taxi-ride-duration"
RIDES = [
    {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01},
    {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0},
    {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 0.0},
]
MAX_BATCH = 50
MAX_BYTES = 8192


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "MODEL_NAME": NAME, "MAX_BATCH_SIZE": str(MAX_BATCH),
           "MAX_CONTENT_LENGTH": str(MAX_BYTES)}
    with running(tmp_path_factory, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def expected(server):
    status, _, body = post_json(server.url + "/predict", RIDES)
    assert status == 200
    return body


def tensors(rides, int_type=np.int64, float_type=np.float64, binary=False):
    """The three input tensors, as a Triton client user builds them from numpy arrays."""
    inputs = []
    for name, dtype in (("PULocationID", int_type), ("DOLocationID", int_type), ("trip_distance", float_type)):
        array = np.array([r[name] for r in rides], dtype=dtype)
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_server_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "ride-duration"
    assert metadata["extensions"] == []


def test_model_metadata_and_readiness(triton, expected):
    version = expected["model_version"]
    metadata = triton.get_model_metadata(NAME)
    assert metadata["name"] == NAME
    assert metadata["versions"] == [version]
    assert {(t["name"], t["datatype"]) for t in metadata["inputs"]} == {
        ("PULocationID", "INT64"), ("DOLocationID", "INT64"), ("trip_distance", "FP64")}
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == [("duration", "FP64")]
    assert triton.get_model_metadata(NAME, model_version=version) == metadata
    assert triton.is_model_ready(NAME)
    assert triton.is_model_ready(NAME, model_version=version)
    assert not triton.is_model_ready("another-model")
    assert not triton.is_model_ready(NAME, model_version="no-such-version")


def test_infer_matches_predict(triton, expected):
    outputs = [httpclient.InferRequestedOutput("duration", binary_data=False)]
    result = triton.infer(NAME, tensors(RIDES), outputs=outputs, request_id="ride-7")
    actual = result.as_numpy("duration")
    assert actual.dtype == np.float64 and actual.shape == (len(RIDES),)
    assert actual.tolist() == expected["durations"]
    response = result.get_response()
    assert response["model_name"] == NAME
    assert response["model_version"] == expected["model_version"]
    assert response["id"] == "ride-7"


def test_infer_on_a_version_without_requested_outputs(triton, expected):
    """No outputs named: the client asks for binary outputs, the server answers JSON, the client copes."""
    result = triton.infer(NAME, tensors(RIDES), model_version=expected["model_version"])
    assert result.as_numpy("duration").tolist() == expected["durations"]


def test_infer_accepts_narrower_types_and_column_shape(server, triton, expected):
    result = triton.infer(NAME, tensors(RIDES, np.int32, np.float32))
    assert np.allclose(result.as_numpy("duration"), expected["durations"], rtol=1e-6)
    body = {"inputs": [{"name": k, "shape": [len(RIDES), 1], "datatype": "INT64" if "ID" in k else "FP64",
                        "data": [[r[k]] for r in RIDES]} for k in RIDES[0]]}
    status, _, answer = post_json(f"{server.url}/v2/models/{NAME}/infer", body)
    assert status == 200
    assert answer["outputs"][0]["data"] == expected["durations"]


def infer_error(server, body, status, path=f"/v2/models/{NAME}/infer", headers=None):
    response = requests.post(server.url + path, data=body if isinstance(body, str) else json.dumps(body),
                             headers={"Content-Type": "application/json", **(headers or {})}, timeout=10)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error"} and isinstance(payload["error"], str)
    return payload["error"]


def v2_request(rides, **override):
    inputs = []
    for name in ("PULocationID", "DOLocationID", "trip_distance"):
        tensor = {"name": name, "shape": [len(rides)], "datatype": "FP64" if name == "trip_distance" else "INT64",
                  "data": [r.get(name) for r in rides]}
        tensor.update(override.get(name, {}))
        inputs.append(tensor)
    return {"inputs": inputs}


def test_bad_values_listed_by_tensor_and_row(server):
    rides = [RIDES[0], {"PULocationID": 1000, "DOLocationID": 151, "trip_distance": -1}]
    message = infer_error(server, v2_request(rides), 422)
    assert "PULocationID[1]" in message and "trip_distance[1]" in message
    assert "1000" not in message.replace("1 to 999", "")


@pytest.mark.parametrize("body", [
    {"inputs": []},
    {"inputs": [{"name": "PULocationID"}]},
    v2_request(RIDES, PULocationID={"datatype": "BYTES"}),
    v2_request(RIDES, trip_distance={"name": "distance"}),
    v2_request(RIDES, trip_distance={"shape": [2]}),
    v2_request(RIDES, trip_distance={"shape": [3, 2]}),
    {"inputs": v2_request(RIDES)["inputs"][:2]},
    {"inputs": v2_request(RIDES)["inputs"] + v2_request(RIDES)["inputs"][:1]},
    {**v2_request(RIDES), "outputs": [{"name": "eta"}]},
    [1, 2],
    "{not json",
], ids=["no-inputs", "incomplete-tensor", "bytes", "unknown-input", "shape-mismatch", "bad-shape",
        "missing-input", "duplicate-input", "unknown-output", "not-an-object", "malformed"])
def test_bad_requests(server, body):
    infer_error(server, body, 400)


@pytest.mark.parametrize(("datatype", "value", "limit"), [
    ("INT8", 151, "[-128, 127]"), ("UINT8", 300, "[0, 255]"), ("UINT16", -1, "[0, 65535]"),
    ("INT16", 40000, "[-32768, 32767]"), ("UINT32", 2 ** 32, "[0, 4294967295]"),
])
def test_values_outside_the_datatype_are_refused(server, datatype, value, limit):
    rides = [{**RIDES[0], "DOLocationID": 1}, {**RIDES[1], "DOLocationID": value}]
    message = infer_error(server, v2_request(rides, DOLocationID={"datatype": datatype}), 400)
    assert message == f"input tensor 'DOLocationID' row 1: value outside the {datatype} range {limit}"


def test_narrow_datatypes_take_the_values_they_hold(server):
    rides = [{**r, "PULocationID": r["PULocationID"] % 128 or 1} for r in RIDES]  # DOLocationIDs fit UINT8
    body = v2_request(rides, PULocationID={"datatype": "INT8"}, DOLocationID={"datatype": "UINT8"})
    status, _, answer = post_json(f"{server.url}/v2/models/{NAME}/infer", body)
    assert status == 200, answer
    assert answer["outputs"][0]["data"] == post_json(server.url + "/predict", rides)[2]["durations"]


def test_column_rows_hold_one_value(server):
    body = v2_request(RIDES, trip_distance={"shape": [3, 1], "data": [[1.0], [2.0, 3.0], [4.0]]})
    assert "each row holds exactly one value" in infer_error(server, body, 400)


def test_triton_client_raises_with_the_message(triton):
    bad = tensors(RIDES)[:2]
    with pytest.raises(InferenceServerException, match="missing input tensor"):
        triton.infer(NAME, bad)


def test_binary_extension_is_refused(server, triton):
    with pytest.raises(InferenceServerException, match="binary tensor data extension"):
        triton.infer(NAME, tensors(RIDES, binary=True))


def test_unknown_model_and_version(server, triton):
    infer_error(server, v2_request(RIDES), 404, "/v2/models/another/infer")
    infer_error(server, v2_request(RIDES), 404, f"/v2/models/{NAME}/versions/nope/infer")
    with pytest.raises(InferenceServerException):
        triton.get_model_metadata("another")


def test_limits_and_content_type(server):
    assert "limit of 50" in infer_error(server, v2_request(RIDES[:1] * (MAX_BATCH + 1)), 413)
    infer_error(server, v2_request(RIDES), 415, headers={"Content-Type": "text/plain"})
    infer_error(server, json.dumps(v2_request(RIDES)) + " " * MAX_BYTES, 413)


def test_unrouted_paths_answer_in_v2_shape(server):
    response = requests.get(server.url + "/v2/nothing/here", timeout=10)
    assert response.status_code == 404 and set(response.json()) == {"error"}
    response = requests.delete(server.url + "/v2/health/live", timeout=10)
    assert response.status_code == 405 and set(response.json()) == {"error"}


def test_not_ready_without_a_model(tmp_path):
    with Server(env={"MODEL_PATH": str(tmp_path / "missing.bin"), "MODEL_NAME": NAME}, workers=1,
                log_path=tmp_path / "log") as srv:
        client = httpclient.InferenceServerClient(url=srv.url.removeprefix("http://"))
        try:
            assert client.is_server_live()
            assert not client.is_server_ready()
            assert not client.is_model_ready(NAME)
            with pytest.raises(InferenceServerException, match="no model loaded"):
                client.infer(NAME, tensors(RIDES))
        finally:
            client.close()
