"""The HTTP contract through Flask's test client (the gunicorn black-box tests are in test_predict.py)."""

import json

import pytest

from ride_duration import create_app
from tests.conftest import BUNDLED, REFERENCE_RIDE


def test_factory_reads_overrides(app):
    assert app.config["MAX_BATCH_SIZE"] == 10_000
    assert create_app({"max_batch_size": 3}).config["MAX_BATCH_SIZE"] == 3


def test_factory_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MAX_BATCH_SIZE", "7")
    assert create_app().config["MAX_BATCH_SIZE"] == 7


def test_predict_single(client):
    resp = client.post("/predict", json=REFERENCE_RIDE)
    assert resp.status_code == 200
    assert set(resp.json) == {"duration", "model_version"}
    assert resp.headers["X-Model-Version"] == resp.json["model_version"]


def test_predict_batch_keeps_order(client):
    rides = [{**REFERENCE_RIDE, "trip_distance": d} for d in (1, 10, 20)]
    single = [client.post("/predict", json=r).json["duration"] for r in rides]
    resp = client.post("/predict", json=rides)
    assert resp.json["durations"] == single


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/vnd.ride+json"])
def test_json_content_types_are_accepted(client, content_type):
    resp = client.post("/predict", data=json.dumps(REFERENCE_RIDE), content_type=content_type)
    assert resp.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_other_content_types_are_415(client, content_type):
    resp = client.post("/predict", data=json.dumps(REFERENCE_RIDE), content_type=content_type)
    assert resp.status_code == 415
    assert resp.json["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("body", [b"", b"{", b'{"PULocationID": NaN}', b"\xff\xfe", b"[1,]"])
def test_malformed_json_is_400(client, body):
    resp = client.post("/predict", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "malformed_json"


def test_request_id_is_echoed_or_generated(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert generated != "bad id <script>" and len(generated) == 32


def test_body_limit_is_configurable():
    client = create_app({"max_content_length": 2048, "model_path": BUNDLED / "lin_reg.bin"}).test_client()
    resp = client.post("/predict", data=b"[" + b" " * 4096 + b"]", content_type="application/json")
    assert resp.status_code == 413
    assert resp.json["error"]["code"] == "payload_too_large"


def test_no_model_is_503_everywhere_it_matters(tmp_path):
    client = create_app({"model_path": tmp_path / "missing.bin"}).test_client()
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and "cannot read model file" in ready.json["reason"]
    resp = client.post("/predict", json=REFERENCE_RIDE)
    assert resp.status_code == 503 and resp.json["error"]["code"] == "model_not_ready"
    assert client.get("/model").status_code == 503


def test_unexpected_errors_are_a_generic_500(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("internal detail /etc/secret")

    resp = app.test_client().get("/boom")
    assert resp.status_code == 500
    assert resp.json == {"error": {"code": "internal_error", "message": "internal server error"}}


def test_model_events_reach_logs_and_listeners_even_with_reserved_names(caplog):
    from ride_duration.model.holder import ModelHolder

    holder = ModelHolder()
    seen = []
    holder.listeners.append(lambda event, **fields: seen.append((event, fields)))
    with caplog.at_level("DEBUG", logger="ride_duration.model.holder"):
        holder.emit("model_rejected", name="x", msg="y", version="3", reason="NaN predictions")
    assert seen == [("model_rejected", {"name": "x", "msg": "y", "version": "3", "reason": "NaN predictions"})]
    record = caplog.records[-1]
    assert record.levelname == "WARNING" and record.field_name == "x" and record.reason == "NaN predictions"


def test_fallback_event_carries_its_reason(caplog):
    from ride_duration.model.holder import ModelHolder, load_bundled

    holder = ModelHolder()
    with caplog.at_level("INFO", logger="ride_duration.model.holder"):
        assert load_bundled(create_app().config["SETTINGS"], holder, note="registry unreachable")
    assert holder.events["model_fallback"]["reason"] == "registry unreachable"
    assert holder.current.info["fallback_reason"] == "registry unreachable"
