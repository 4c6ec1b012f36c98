"""MLflow scoring protocol against the real service (gunicorn), spoken to by MLflow's own client code."""

from __future__ import annotations

import importlib.metadata
import json

import pandas as pd
import pytest
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.utils.proto_json_utils import dump_input_data

from tests.conftest import BUNDLED
from tests.support import Server, post_json, running

RIDES = [
    {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01},
    {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40.0},
    {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 0},
]
COLUMNS = list(RIDES[0])
MAX_BATCH = 50
MAX_BYTES = 8192


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "MAX_BATCH_SIZE": str(MAX_BATCH),
           "MAX_CONTENT_LENGTH": str(MAX_BYTES)}
    with running(tmp_path_factory, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    host, port = server.url.removeprefix("http://").split(":")
    scoring = ScoringServerClient(host, int(port))
    scoring.wait_server_ready(timeout=30)
    return scoring


@pytest.fixture(scope="module")
def expected(server):
    """What /predict answers for RIDES: every protocol must give exactly these numbers."""
    status, _, body = post_json(server.url + "/predict", RIDES)
    assert status == 200
    return body["durations"]


@pytest.fixture(scope="module")
def answer(server, expected):
    """The whole /invocations body for RIDES: the predictions and, as /predict gives them, the warnings
    (the third ride's 0 miles is "not recorded")."""
    warnings = post_json(server.url + "/predict", RIDES)[2]["warnings"]
    assert [(w["field"], w["reason"]) for w in warnings] == [("[2].trip_distance", "distance_zero")]
    return {"predictions": expected, "warnings": warnings}


def invoke(server, body, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(server.url + "/invocations", data=data, headers={"Content-Type": content_type}, timeout=10)


def mlflow_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error_code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text and "stack_trace" not in body
    return body


def test_ping_and_version_with_mlflow_client(client):
    client.ping()  # raises unless 200
    actual = client.get_version()
    expected = importlib.metadata.version("mlflow-skinny")
    assert actual == expected


def test_invoke_dataframe_with_mlflow_client(client, expected):
    frame = pd.DataFrame(RIDES)  # ScoringServerClient sends it as dataframe_split
    response = client.invoke(frame)
    actual = response.get_predictions(predictions_format="ndarray").tolist()
    assert actual == expected


def test_invoke_records_and_params_with_mlflow_client(client, expected):
    response = client.invoke(RIDES, params={"ignored": 1})  # {"inputs": [...], "params": {...}}
    assert response["predictions"] == expected
    frame = response.get_predictions()
    assert list(frame.iloc[:, 0]) == expected


@pytest.mark.parametrize("body", [
    {"dataframe_split": pd.DataFrame(RIDES).to_dict(orient="split")},
    {"dataframe_split": {"columns": COLUMNS, "data": [list(r.values()) for r in RIDES]}},
    {"dataframe_records": RIDES},
    {"instances": RIDES},
    {"inputs": RIDES},
    {"inputs": {c: [r[c] for r in RIDES] for c in COLUMNS}},
    {"instances": {c: [r[c] for r in RIDES] for c in COLUMNS}},
], ids=["split-pandas", "split", "records", "instances", "inputs", "inputs-columns", "instances-columns"])
def test_every_json_format(server, answer, body):
    response = invoke(server, body)
    assert response.status_code == 200, response.text
    assert response.json() == answer
    assert response.headers["X-Model-Version"]


@pytest.mark.parametrize("index", [True, False])
def test_csv_as_pandas_writes_it(server, answer, index):
    csv = pd.DataFrame(RIDES).to_csv(index=index)  # with index: an unnamed extra column, ignored
    response = invoke(server, csv, "text/csv; charset=utf-8")
    assert response.status_code == 200, response.text
    assert response.json() == answer


def test_mlflow_payload_helper_round_trip(server, answer):
    """MLflow's own serializer (what every MLflow client uses) for a frame with extra columns."""
    frame = pd.DataFrame([{**r, "VendorID": 2, "store_and_fwd_flag": "N"} for r in RIDES])
    response = invoke(server, dump_input_data(frame))
    assert response.json() == answer


def test_bad_ride_is_listed_like_predict(server):
    bad = [RIDES[0], {"PULocationID": 0, "DOLocationID": 151, "trip_distance": "SECRET-42"}]
    predict_status, _, predict_body = post_json(server.url + "/predict", bad)
    response = invoke(server, {"dataframe_records": bad})
    body = mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert predict_status == 422
    assert body["details"] == predict_body["error"]["details"]
    assert {d["field"] for d in body["details"]} == {"[1].PULocationID", "[1].trip_distance"}
    assert "SECRET-42" not in response.text


def test_missing_column_in_csv(server):
    response = invoke(server, "PULocationID,DOLocationID\n43,151\n", "text/csv")
    body = mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
    assert body["details"] == [{"field": "[0].trip_distance", "problem": "field required"}]


@pytest.mark.parametrize("body", [
    {"rides": RIDES},
    {"dataframe_records": RIDES, "inputs": RIDES},
    RIDES,
    {"dataframe_split": {"columns": COLUMNS, "data": [[43, 151]]}},
    {"dataframe_split": {"data": [[43, 151, 1.0]]}},
    {"inputs": {"PULocationID": [43], "DOLocationID": [151, 1], "trip_distance": [1.0]}},
    {"inputs": RIDES, "params": [1]},
], ids=["no-format", "two-formats", "bare-list", "short-row", "no-columns", "ragged-columns", "bad-params"])
def test_not_a_scoring_request(server, body):
    mlflow_error(invoke(server, body), 400, "BAD_REQUEST")


@pytest.mark.parametrize(("body", "content_type", "message"), [
    ({"dataframe_split": {"columns": [*COLUMNS, "trip_distance"], "data": [[43, 151, 1.0, 9.0]]}}, "application/json",
     "'dataframe_split': column 'trip_distance' appears twice (columns 3 and 4); column names must be unique"),
    ("PULocationID,DOLocationID,trip_distance,PULocationID\n43,151,1.0,7\n", "text/csv",
     "CSV header: column 'PULocationID' appears twice (columns 1 and 4); column names must be unique"),
    ("SECRET,PULocationID,DOLocationID,trip_distance,SECRET\n1,43,151,1.0,2\n", "text/csv",
     "CSV header: column number 5 appears twice (columns 1 and 5); column names must be unique"),
    ({"dataframe_split": {"columns": COLUMNS, "data": [[43, 151, 1.0]], "index": [0, 1]}}, "application/json",
     "'dataframe_split' has 2 index labels for 1 rows; give one label per row or no index"),
], ids=["split", "csv", "csv-unknown-name", "index-length"])
def test_ambiguous_frames_are_refused(server, body, content_type, message):
    assert mlflow_error(invoke(server, body, content_type), 400, "BAD_REQUEST")["message"] == message


def test_csv_names_and_cells_are_read_as_written(server):
    padded_name = mlflow_error(invoke(server, "PULocationID, DOLocationID,trip_distance\n43,151,1.0\n", "text/csv"),
                               400, "INVALID_PARAMETER_VALUE")
    assert padded_name["details"] == [{"field": "[0].DOLocationID", "problem": "field required"}]
    padded_cell = mlflow_error(invoke(server, "PULocationID,DOLocationID,trip_distance\n43,151, 1.0\n", "text/csv"),
                               400, "INVALID_PARAMETER_VALUE")
    assert [d["field"] for d in padded_cell["details"]] == ["[0].trip_distance"]


@pytest.mark.parametrize("content_type", ["application/json; format=pandas-split", "text/csv; header=present",
                                          "application/json; charset=utf8"])
def test_content_type_parameters_other_than_utf8_charset(server, content_type):
    body = mlflow_error(invoke(server, json.dumps({"inputs": RIDES}), content_type), 415, "BAD_REQUEST")
    assert "format" in body["message"] or "header" in body["message"] or "charset=utf-8" in body["message"]


def test_errors_never_repeat_the_callers_names(server):
    body = mlflow_error(invoke(server, {"inputs": {"SECRET_COLUMN": 5}}), 400, "BAD_REQUEST")
    assert "SECRET" not in json.dumps(body)


def test_malformed_json_and_csv(server):
    assert "SECRET" not in mlflow_error(invoke(server, '{"inputs": SECRET'), 400, "BAD_REQUEST")["message"]
    mlflow_error(invoke(server, b"\xff\xfe", "text/csv"), 400, "BAD_REQUEST")
    mlflow_error(invoke(server, "", "text/csv"), 400, "BAD_REQUEST")
    mlflow_error(invoke(server, "a,b\n1,2,3\n", "text/csv"), 400, "BAD_REQUEST")


@pytest.mark.parametrize("content_type", ["text/plain", "application/vnd.apache.parquet",
                                          "application/json; charset=latin-1"])
def test_unsupported_content_type(server, content_type):
    mlflow_error(invoke(server, json.dumps({"inputs": RIDES}), content_type), 415, "BAD_REQUEST")


def test_batch_limit(server):
    response = invoke(server, {"inputs": RIDES[:1] * (MAX_BATCH + 1)})
    mlflow_error(response, 413, "REQUEST_LIMIT_EXCEEDED")
    assert invoke(server, {"inputs": RIDES[:1] * MAX_BATCH}).status_code == 200


def test_body_size_limit(server):
    body = json.dumps({"inputs": RIDES}) + " " * MAX_BYTES
    mlflow_error(invoke(server, body), 413, "REQUEST_LIMIT_EXCEEDED")


def test_wrong_method_answers_in_mlflow_shape(server):
    response = requests.get(server.url + "/invocations", timeout=10)
    mlflow_error(response, 405, "BAD_REQUEST")
    assert "POST" in response.headers["Allow"]


def test_mlflow_client_reports_errors(client):
    with pytest.raises(Exception, match="error code 400"):
        client.invoke([{"PULocationID": 43}])


def test_no_model_means_503(tmp_path):
    env = {"MODEL_PATH": str(tmp_path / "missing.bin")}
    with Server(env=env, workers=1, log_path=tmp_path / "log") as srv:
        assert requests.get(srv.url + "/ready", timeout=10).status_code == 503
        mlflow_error(requests.get(srv.url + "/ping", timeout=10), 503, "TEMPORARILY_UNAVAILABLE")
        mlflow_error(invoke(srv, {"inputs": RIDES}), 503, "TEMPORARILY_UNAVAILABLE")
