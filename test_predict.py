"""Black-box tests: the real service under gunicorn on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import json
import math
import socket

import pytest

from tests.conftest import BUNDLED, REFERENCE_RIDE, bundle_copy  # noqa: F401 - fixture
from tests.support import Server, http, post_json, running
from tests.synthetic import tlc_data_dir

JSON = {"Content-Type": "application/json"}
ZOOMCAMP = tlc_data_dir() / "zoomcamp_lin_reg.bin"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running(tmp_path_factory, {"MODEL_PATH": str(BUNDLED / "lin_reg.bin")}) as srv:
        yield srv


def error_of(status: int, body: bytes) -> dict:
    payload = json.loads(body)
    assert set(payload) == {"error"}, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["code"]
    return payload["error"]


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST that tolerates the server answering (and closing) before the body is sent."""
    host, port = url.split("//")[1].split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(len(body)),
                                                   "Connection": "close"}.items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        try:
            for i in range(0, len(body), 1 << 16):
                sock.sendall(body[i:i + (1 << 16)])
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


def test_reference_ride(server):
    status, headers, body = post_json(server.url + "/predict", REFERENCE_RIDE)
    assert status == 200
    assert set(body) == {"duration", "model_version"}
    assert isinstance(body["duration"], float) and 5 < body["duration"] < 60
    meta = json.loads((BUNDLED / "metadata.json").read_text())
    assert body["model_version"] == meta["version"] == headers["X-Model-Version"]
    assert headers["X-Request-ID"]


def test_batch_in_input_order(server):
    rides = [{**REFERENCE_RIDE, "trip_distance": d} for d in (0.5, 40, 3)]
    status, _, body = post_json(server.url + "/predict", rides)
    singles = [post_json(server.url + "/predict", r)[2]["duration"] for r in rides]
    assert status == 200
    assert body["durations"] == singles
    assert body["model_version"]


def test_full_tlc_record_is_accepted(server):
    record = {"VendorID": 2, "lpep_pickup_datetime": "2021-01-01 00:15:56", "store_and_fwd_flag": "N",
              "RatecodeID": 1.0, "PULocationID": 10, "DOLocationID": 50, "passenger_count": 1.0,
              "trip_distance": 40, "fare_amount": 100.5, "payment_type": 1.0}
    assert post_json(server.url + "/predict", record)[2]["duration"] == \
        post_json(server.url + "/predict", REFERENCE_RIDE)[2]["duration"]


@pytest.mark.parametrize("body,status,code,field", [
    (b'{"PULocationID": 10, ', 400, "malformed_json", None),
    (b'{"PULocationID": "10", "DOLocationID": 50, "trip_distance": 40}', 422, "invalid_input", "PULocationID"),
    (b'{"PULocationID": 10, "DOLocationID": 50, "trip_distance": -1}', 422, "invalid_input", "trip_distance"),
    (b'{"PULocationID": 10, "DOLocationID": 50, "trip_distance": NaN}', 400, "malformed_json", None),
    (b'{"PULocationID": 10, "DOLocationID": 50, "trip_distance": "NaN"}', 422, "invalid_input", "trip_distance"),
    (b'{"PULocationID": true, "DOLocationID": 50, "trip_distance": 40}', 422, "invalid_input", "PULocationID"),
    (b"[]", 422, "invalid_input", "body"),
    (b'"just a string"', 422, "invalid_input", "body"),
])
def test_bad_input_gets_a_named_4xx(server, body, status, code, field):
    actual_status, _, raw = http("POST", server.url + "/predict", body, JSON)
    err = error_of(actual_status, raw)
    assert (actual_status, err["code"]) == (status, code)
    if field:
        assert field in [d["field"] for d in err["details"]]
    assert b"Traceback" not in raw


def test_payload_is_never_echoed(server):
    canary = "CANARY-7f3a9"
    status, _, raw = http("POST", server.url + "/predict",
                          json.dumps({"PULocationID": canary, "DOLocationID": 1, "trip_distance": 1}), JSON)
    assert status == 422 and canary.encode() not in raw


def test_twenty_megabyte_body_is_413(server):
    status, raw = raw_post(server.url, b" " * (20 * 1024 * 1024), JSON)
    assert status == 413
    assert json.loads(raw)["error"]["code"] == "payload_too_large"


def test_batch_of_10001_is_413_and_10000_is_fine(server):
    status, _, raw = http("POST", server.url + "/predict", json.dumps([REFERENCE_RIDE] * 10_001), JSON)
    assert status == 413 and error_of(status, raw)["code"] == "payload_too_large"
    status, _, body = post_json(server.url + "/predict", [REFERENCE_RIDE] * 10_000)
    assert status == 200 and len(body["durations"]) == 10_000


def test_wrong_content_type_is_415(server):
    status, _, raw = http("POST", server.url + "/predict", json.dumps(REFERENCE_RIDE), {"Content-Type": "text/csv"})
    assert status == 415 and error_of(status, raw)["code"] == "unsupported_media_type"


def test_unknown_path_and_wrong_method_are_json(server):
    status, _, raw = http("GET", server.url + "/nope")
    assert status == 404 and error_of(status, raw)["code"] == "not_found"
    status, headers, raw = http("GET", server.url + "/predict")
    assert status == 405 and error_of(status, raw)["code"] == "method_not_allowed"
    assert "POST" in headers["Allow"]


def test_health_ready_and_model(server):
    assert http("GET", server.url + "/health")[0] == 200
    status, _, raw = http("GET", server.url + "/ready")
    ready = json.loads(raw)
    meta = json.loads((BUNDLED / "metadata.json").read_text())
    assert status == 200
    assert ready["source"] == "bundled" and ready["sha256"] == meta["sha256"]
    assert ready["model_version"] == meta["version"] and ready["sklearn_version"]
    card = json.loads(http("GET", server.url + "/model")[2])
    assert card["metrics"]["valid_rmse"] == meta["metrics"]["valid_rmse"]
    assert card["features"] == meta["features"] == ["PU_DO", "PU", "DO", "trip_distance"]
    assert card["metrics"]["valid_rmse_plausible"] == meta["metrics"]["valid_rmse_plausible"]
    assert card["plausibility"] == meta["plausibility"]
    assert card["feature_step"] == meta["feature_step"] and card["regressor"] == meta["params"]["model"]
    assert card["train_data"]["rows"] == meta["train_data"]["rows"] and card["trained_at"]


def test_request_id_is_propagated(server):
    _, headers, _ = http("GET", server.url + "/health", headers={"X-Request-ID": "trace-42"})
    assert headers["X-Request-ID"] == "trace-42"


def test_course_model_serves_the_course_answer(tmp_path):
    """The course's pickle named by MODEL_PATH: an operator's explicit file is trusted (with warnings) even
    with no digest beside it (issue 18's safe models; the in-process half is in tests/registry/test_model_safety.py)."""
    if not ZOOMCAMP.is_file():
        pytest.skip(f"{ZOOMCAMP} not found (set TLC_DATA_DIR; default ../shared/data)")
    with Server(env={"MODEL_PATH": str(ZOOMCAMP)}, workers=1, log_path=tmp_path / "log") as srv:
        srv.wait("/ready")
        status, _, body = post_json(srv.url + "/predict", REFERENCE_RIDE)
        ready = json.loads(http("GET", srv.url + "/ready")[2])
    assert status == 200 and body["duration"] == 26.43883355119793
    assert any("1.0.2" in w for w in ready["warnings"])


def test_tampered_bundle_is_refused(bundle_copy, tmp_path):  # noqa: F811 - the imported fixture
    blob = bytearray(bundle_copy.read_bytes())
    blob[1000] ^= 0xFF
    bundle_copy.write_bytes(bytes(blob))
    with Server(env={"MODEL_PATH": str(bundle_copy)}, workers=1, log_path=tmp_path / "log") as srv:
        status, _, raw = http("GET", srv.url + "/ready")
        predict_status = http("POST", srv.url + "/predict", json.dumps(REFERENCE_RIDE), JSON)[0]
        log = srv.log_text()
    assert status == 503
    assert "sha256 mismatch" in json.loads(raw)["reason"]
    assert predict_status == 503
    assert "sha256 mismatch" in log


def test_durations_are_finite_for_extreme_valid_rides(server):
    rides = [{"PULocationID": 999, "DOLocationID": 1, "trip_distance": 1000},
             {"PULocationID": 1, "DOLocationID": 999, "trip_distance": 0}]
    status, _, body = post_json(server.url + "/predict", rides)
    assert status == 200 and all(math.isfinite(d) for d in body["durations"])
