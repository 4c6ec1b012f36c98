"""Ride ids on every prediction endpoint of a real gunicorn: validated by one rule, echoed, logged.

One server (prediction log on) for the module. Shadow scoring has its own tests (test_shadow.py).
"""

from __future__ import annotations

import json

import pytest

from ride_duration.jobs import sources
from ride_duration.schemas import RIDE_ID_PROBLEM
from tests.conftest import BUNDLED, REFERENCE_RIDE
from tests.support import http, post_json, running, wait_until

V2 = "/v2/models/nyc-taxi-ride-duration/infer"
RIDE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}
LONG = "x" * 65
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("predictions")
    with running(tmp_path_factory, {"MODEL_PATH": str(BUNDLED / "lin_reg.bin"), "PREDICTION_LOG_DIR": str(log_dir)},
                 workers=1) as srv:
        srv.log_dir = log_dir
        yield srv


def logged(log_dir):
    return [json.loads(line) for path in sorted(log_dir.glob("*.jsonl*")) for line in path.read_text().splitlines()]


def v2_body(ids=None, datatype="BYTES", parameters=None, rides=(RIDE,)):
    inputs = [{"name": k, "shape": [len(rides)], "datatype": "FP64" if k == "trip_distance" else "INT64",
               "data": [r[k] for r in rides]} for k in RIDE]
    if ids is not None:
        inputs.append({"name": "ride_id", "shape": [len(ids)], "datatype": datatype, "data": ids})
    return {"inputs": inputs, **({"parameters": parameters} if parameters is not None else {})}


def test_predict_echoes_ride_ids(server):
    status, _, one = post_json(server.url + "/predict", {**RIDE, "ride_id": "trip-1"})
    assert status == 200 and one["ride_id"] == "trip-1" and set(one) == {"duration", "model_version", "ride_id"}
    status, _, plain = post_json(server.url + "/predict", RIDE)
    assert status == 200 and "ride_id" not in plain and plain["duration"] == one["duration"]
    rides = [{**RIDE, "ride_id": 7}, RIDE, {**REFERENCE_RIDE, "ride_id": 17.0}]
    status, _, batch = post_json(server.url + "/predict", rides)
    assert status == 200 and batch["ride_ids"] == [7, None, 17]  # an integral float is the integer
    status, _, unnamed = post_json(server.url + "/predict", [RIDE, RIDE])
    assert status == 200 and "ride_ids" not in unnamed


def test_invocations_echo_a_ride_id_column(server):
    rides = [{**RIDE, "ride_id": "a"}, {**REFERENCE_RIDE, "ride_id": 2}]
    expected = post_json(server.url + "/predict", rides)[2]["durations"]
    for payload in ({"dataframe_records": rides},
                    {"dataframe_split": {"columns": ["ride_id", *RIDE], "data": [[r["ride_id"], *(r[k] for k in RIDE)]
                                                                                for r in rides]}},
                    {"inputs": {k: [r[k] for r in rides] for k in rides[0]}}):
        status, _, body = post_json(server.url + "/invocations", payload)
        assert status == 200, body
        assert body == {"predictions": expected, "ride_ids": ["a", 2]}
    csv = "ride_id,PULocationID,DOLocationID,trip_distance\na,43,151,1.01\n2,10,50,40\n"
    status, _, raw = http("POST", server.url + "/invocations", csv, {"Content-Type": "text/csv"})
    assert status == 200 and json.loads(raw) == {"predictions": expected, "ride_ids": ["a", 2]}


def test_v2_echoes_a_ride_id_tensor_or_parameter(server):
    status, _, body = post_json(server.url + V2, v2_body(["r-1", "r-2"], rides=(RIDE, REFERENCE_RIDE)))
    assert status == 200, body
    assert body["outputs"][1] == {"name": "ride_id", "datatype": "BYTES", "shape": [2], "data": ["r-1", "r-2"]}
    status, _, body = post_json(server.url + V2, v2_body([41], datatype="INT64"))
    assert status == 200 and body["outputs"][1]["data"] == [41] and body["outputs"][1]["datatype"] == "INT64"
    status, _, body = post_json(server.url + V2, v2_body(parameters={"ride_id": "single"}))
    assert status == 200 and body["parameters"] == {"ride_id": "single"} and len(body["outputs"]) == 1


@pytest.mark.parametrize("bad", [LONG, "", True, 2 ** 63, 1.5, None, ["a"]])
def test_bad_ride_ids_are_named_never_echoed(server, bad):
    secret = json.dumps(bad)
    status, _, raw = http("POST", server.url + "/predict", json.dumps({**RIDE, "ride_id": bad}),
                          {"Content-Type": "application/json"})
    body = json.loads(raw)
    assert status == 422 and body["error"]["details"] == [{"field": "ride_id", "problem": RIDE_ID_PROBLEM}]
    status, _, raw = http("POST", server.url + "/predict", json.dumps([RIDE, {**RIDE, "ride_id": bad}]),
                          {"Content-Type": "application/json"})
    assert status == 422 and json.loads(raw)["error"]["details"][0]["field"] == "[1].ride_id"
    records = {"dataframe_records": [{**RIDE, "ride_id": bad}]}
    status, _, raw = http("POST", server.url + "/invocations", json.dumps(records), JSON)
    assert status == 400 and json.loads(raw)["details"] == [{"field": "[0].ride_id", "problem": RIDE_ID_PROBLEM}]
    status, _, raw = http("POST", server.url + V2, json.dumps(v2_body(parameters={"ride_id": bad})),
                          {"Content-Type": "application/json"})
    assert status == 422 and "parameters.ride_id" in json.loads(raw)["error"]
    if bad in (LONG, True):  # never echoed (a short value could appear by chance in any message)
        assert secret not in raw.decode() and LONG not in raw.decode()


def test_v2_ride_id_tensor_rules(server):
    status, _, body = post_json(server.url + V2, v2_body([LONG]))
    assert status == 422 and body["error"].startswith("1 invalid field(s): ride_id[0]: ") and LONG not in body["error"]
    status, _, body = post_json(server.url + V2, v2_body([3], datatype="BYTES"))
    assert status == 400 and "BYTES" in body["error"]
    status, _, body = post_json(server.url + V2, v2_body(parameters={"ride_id": "one"}, rides=(RIDE, RIDE)))
    assert status == 422 and "parameters.ride_id" in body["error"]


def test_the_prediction_log_records_ride_ids_and_monitor_reads_only_served_lines(server):
    post_json(server.url + "/predict", [RIDE, {**RIDE, "ride_id": "logged-1"}])
    served = wait_until(lambda: [r for r in logged(server.log_dir) if r["ride_id"] == "logged-1"], 10, "the log line")
    assert served[0]["role"] == "served" and served[0]["endpoint"] == "/predict"
    same = [r for r in logged(server.log_dir) if r["request_id"] == served[0]["request_id"]]
    assert [r["ride_id"] for r in same] == [None, "logged-1"]  # a ride without an id is logged with null
    # a shadow line (what the shadow scorer writes) and an older line without "role"
    lines = logged(server.log_dir)
    shadow = {**served[0], "role": "shadow", "model_version": "other-v2", "prediction": 99.0,
              "served_model_version": served[0]["model_version"], "served_prediction": served[0]["prediction"]}
    older = {k: v for k, v in served[0].items() if k not in ("role", "ride_id")}
    (server.log_dir / "extra.jsonl").write_text(json.dumps(shadow) + "\n" + json.dumps(older) + "\n")
    frame, about = sources.read_log(server.log_dir)
    assert len(frame) == len(lines) + 1 and about["shadow_lines"] == 1
    assert about["model_versions"] == [served[0]["model_version"]] and 99.0 not in set(frame["prediction"])
