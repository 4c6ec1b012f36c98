"""Shadow scoring against a real ``mlflow server`` and a real 2-worker gunicorn (gevent).

``@production`` is the bundled weights (v1); ``@challenger`` the same weights + 1 minute (v2), which
raises on poisoned rides; later ``@challenger`` moves to a version that blocks on them until the test
opens its gate (v3). Every answer comes from v1 and never carries the shadow; the shadow's lines in
the prediction log name both versions; ``/metrics`` counts shadow rides, errors and the |diff| sum;
a failing or stuck shadow never fails or holds an answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import typing as t
import uuid

import pytest

from ride_duration.model.holder import ModelHolder
from ride_duration.model.shadow import ShadowScorer, metrics
from tests import shadow_models
from tests.shadow_models import POISON
from tests.support import http, post_json, running, wait_until

pytestmark = pytest.mark.slow
RIDE = {"PULocationID": 43, "DOLocationID": 151, "trip_distance": 1.01}
V2 = "/v2/models/{name}/infer"


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    text = http("GET", url + "/metrics")[2].decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def lines(log_dir: os.PathLike[str], role: str) -> list[dict[str, t.Any]]:
    out = []
    for path in sorted(os.scandir(log_dir), key=lambda e: e.name):
        with open(path.path) as f:
            out += [r for r in map(json.loads, f) if r.get("role") == role]
    return out


@pytest.fixture(scope="module")
def setup(mlflow_server, tmp_path_factory):
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.url)
    name = f"shadow-{uuid.uuid4().hex[:8]}"
    v1 = shadow_models.register(name, alias="production")
    v2 = shadow_models.register(name, shadow_models.shifted(1.0, "raise"), alias="challenger")
    log_dir = tmp_path_factory.mktemp("predictions")
    metrics_dir = tmp_path_factory.mktemp("metrics")
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_NAME": name, "MODEL_POLL_SECONDS": "1",
           "SHADOW_MODEL_URI": f"models:/{name}@challenger", "SHADOW_SAMPLE_RATE": "1.0",
           "ALLOW_PICKLE_MODELS": "true", "PREDICTION_LOG_DIR": str(log_dir),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running(tmp_path_factory, env, workers=2) as srv:
        yield {"srv": srv, "name": name, "v1": f"{name}-v{v1}", "v2": f"{name}-v{v2}", "log_dir": log_dir,
               "mlflow": mlflow_server}


def test_ready_shows_the_shadow(setup):
    status, _, body = http("GET", setup["srv"].url + "/ready")
    ready = json.loads(body)
    assert status == 200 and ready["model_version"] == setup["v1"]
    assert ready["shadow"] == {"status": "scoring", "model_version": setup["v2"], "sample_rate": 1.0,
                               "uri": f"models:/{setup['name']}@challenger"}


def test_answers_come_from_the_served_model_and_the_shadow_is_logged_beside_them(setup):
    url, v1, v2 = setup["srv"].url, setup["v1"], setup["v2"]
    pair = {"served_version": v1, "shadow_version": v2}
    before = metric(url, "ride_duration_shadow_rides_total", **pair)
    diff_before = metric(url, "ride_duration_shadow_abs_diff_minutes_total", **pair)
    answers = {}
    for i in range(6):
        status, headers, body = post_json(url + "/predict", {**RIDE, "trip_distance": 1.0 + i, "ride_id": f"p{i}"})
        assert status == 200 and set(body) == {"duration", "model_version", "ride_id"} and body["model_version"] == v1
        answers[f"p{i}"] = body["duration"]
    status, _, body = post_json(url + "/invocations", {"dataframe_records": [{**RIDE, "ride_id": "inv"}]})
    assert status == 200 and set(body) == {"predictions", "ride_ids"}
    answers["inv"] = body["predictions"][0]
    tensors = [{"name": k, "shape": [1], "datatype": "FP64" if k == "trip_distance" else "INT64", "data": [v]}
               for k, v in RIDE.items()]
    status, _, body = post_json(url + V2.format(name=setup["name"]), {"inputs": tensors, "parameters": {"ride_id": 99}})
    assert status == 200 and body["model_version"] == v1 and [o["name"] for o in body["outputs"]] == ["duration"]
    answers[99] = body["outputs"][0]["data"][0]

    def shadowed():
        found = {r["ride_id"]: r for r in lines(setup["log_dir"], "shadow") if r["ride_id"] in answers}
        return found if len(found) == len(answers) else None

    shadow = wait_until(shadowed, 30, "a shadow line for every ride")
    for ride_id, served in answers.items():
        line = shadow[ride_id]
        assert line["model_version"] == v2 and line["served_model_version"] == v1
        assert line["served_prediction"] == served
        assert line["prediction"] == pytest.approx(served + 1.0, abs=1e-9)  # v2 is v1 + 1 minute
    assert {shadow[k]["endpoint"] for k in answers} == {"/predict", "/invocations", f"/v2/models/{setup['name']}/infer"}
    served_lines = {r["ride_id"]: r for r in lines(setup["log_dir"], "served")}
    assert all(served_lines[k]["model_version"] == v1 for k in answers)
    rides = wait_until(lambda: (n := metric(url, "ride_duration_shadow_rides_total", **pair)) >= before + 8 and n,
                       30, "the shadow ride counter")
    diff = metric(url, "ride_duration_shadow_abs_diff_minutes_total", **pair) - diff_before
    assert diff / (rides - before) == pytest.approx(1.0, abs=1e-6)  # the PromQL ratio: mean |served - shadow|


def test_a_shadow_that_raises_on_every_ride_fails_no_answer(setup):
    url = setup["srv"].url
    before = metric(url, "ride_duration_shadow_errors_total", shadow_version=setup["v2"])
    for i in range(10):
        status, _, body = post_json(url + "/predict", [{**RIDE, "trip_distance": POISON, "ride_id": f"bad{i}"}] * 2)
        assert status == 200 and body["model_version"] == setup["v1"] and len(body["durations"]) == 2
    wait_until(lambda: metric(url, "ride_duration_shadow_errors_total", shadow_version=setup["v2"]) >= before + 20,
               30, "the shadow error counter to count the 20 rides")
    assert not [r for r in lines(setup["log_dir"], "shadow") if str(r["ride_id"]).startswith("bad")]
    log = setup["srv"].log_text()  # the failure is one log line per minute, no traceback
    assert "shadow model failed" in log and "tests/shadow_models.py" not in log


def every_worker_shadows(srv, version: str) -> bool:
    """Each live worker's latest shadow swap (its JSON log) is to ``version``. Asking /ready a few times
    is not enough: gevent workers do not balance accepts, so every answer may come from one worker
    while the other still shadows with the previous version (a full run saw exactly that)."""
    latest: dict[int, str] = {}
    for line in srv.log_text().splitlines():
        if line.startswith("{") and '"role":"shadow"' in line:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("role") == "shadow" and record.get("model_version"):
                    latest[record["pid"]] = record["model_version"]
    workers = srv.worker_pids()
    return bool(workers) and all(latest.get(pid) == version for pid in workers)


def test_a_stuck_shadow_holds_no_answer(setup, tmp_path):
    """v3 blocks on poisoned rides until the gate opens: every answer comes back while it is stuck
    (ordering, not timing: no v3 shadow result exists until the test opens the gate)."""
    import mlflow

    url, name = setup["srv"].url, setup["name"]
    gate = tmp_path / "gate"
    v3 = f"{name}-v{shadow_models.register(name, shadow_models.shifted(2.0, 'block', gate), alias='challenger')}"
    wait_until(lambda: every_worker_shadows(setup["srv"], v3), 60, "every worker to follow @challenger to v3")
    pair = {"served_version": setup["v1"], "shadow_version": v3}
    for i in range(20):
        status, _, body = post_json(url + "/predict", {**RIDE, "trip_distance": POISON, "ride_id": f"stuck{i}"},
                                    timeout=10)
        assert status == 200 and body["model_version"] == setup["v1"]
    assert metric(url, "ride_duration_shadow_rides_total", **pair) == 0  # the shadow is still stuck on its first ride
    assert not [r for r in lines(setup["log_dir"], "shadow") if r["model_version"] == v3]
    gate.touch()
    wait_until(lambda: metric(url, "ride_duration_shadow_rides_total", **pair) >= 20, 60,
               "the stuck shadow to score the 20 rides once released")
    mlflow.MlflowClient().set_registered_model_alias(name, "challenger", setup["v2"].rsplit("-v", 1)[1])
    wait_until(lambda: every_worker_shadows(setup["srv"], setup["v2"]), 60,
               "every worker back on v2 (the module's other tests expect it)")


def test_a_full_queue_drops_and_counts_without_waiting():
    """Nothing drains the queue (as if the shadow were stuck): submit returns at once, the overflow is counted."""
    scorer = ShadowScorer(ModelHolder(role="shadow"), 1.0, queue_size=2)
    scorer.pid = os.getpid()  # pretend the scorer thread runs
    dropped = metrics().dropped.labels("queue_full")
    before = dropped._value.get()
    for _ in range(5):
        scorer.submit([RIDE, RIDE], [1.0, 2.0], "v1")
    assert scorer.queue.qsize() == 2 and dropped._value.get() - before == 6


def test_a_shadow_version_the_checks_refuse_is_named_and_never_scores(setup):
    """The serving model's refusal rules hold for the shadow: a pickled version without
    ALLOW_PICKLE_MODELS is refused (in-process app on the same registry), /ready names it, answers go on."""
    from ride_duration import create_app

    app = create_app({"mlflow_tracking_uri": setup["mlflow"].url, "model_name": setup["name"],
                      "allow_pickle_models": False, "model_fallback": True,
                      "shadow_model_uri": f"models:/{setup['name']}@challenger"})
    client = app.test_client()
    ready = client.get("/ready").json
    shadow = ready["shadow"]
    assert shadow["status"] == "unavailable" and shadow["model_version"] is None
    assert [r["code"] for r in shadow["refused"]] == ["pickle_refused"] and "rejected" in shadow["reason"]
    assert client.post("/predict", json={**RIDE, "ride_id": "r"}).json["ride_id"] == "r"
