"""Bearer tokens on the prediction routes (API_TOKENS_FILE): real gunicorn, real HTTP.

The token file is parsed by pure functions (unit tests first); then a 2-worker service with a file
of one plain and one hashed token: every prediction route refuses anonymous and wrong tokens with
401 in its protocol's error shape and a ``WWW-Authenticate`` challenge, accepts both tokens, and
leaves health, readiness, metrics and docs open; the file is re-read when it is rotated.
"""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import os
import time
from pathlib import Path

import pytest

from ride_duration.web import auth
from tests.support import Server, http, running

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}
PLAIN, HASHED = "plain-token-1f3a9c", "hashed-token-77be02"
MODEL_NAME = "nyc-taxi-ride-duration"
V2_INFER = {"inputs": [
    {"name": "PULocationID", "datatype": "INT64", "shape": [1], "data": [10]},
    {"name": "DOLocationID", "datatype": "INT64", "shape": [1], "data": [50]},
    {"name": "trip_distance", "datatype": "FP64", "shape": [1], "data": [40.0]},
]}
ROUTES = {  # path -> (body, the key of the protocol's error message)
    "/predict": (RIDE, "error.message"),
    "/invocations": ({"dataframe_records": [RIDE]}, "message"),
    f"/v2/models/{MODEL_NAME}/infer": (V2_INFER, "error"),
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """How a Secret volume changes: a new file renamed over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the file format (pure) ---------------------------------------------------------------------

def test_plain_and_hashed_lines_stand_for_the_same_digest_comments_and_blanks_ignored(tmp_path) -> None:
    text = f"# rotated 2026-12-06\n\n  {PLAIN}  \nsha256:{sha(HASHED).upper()}\n"
    assert auth.parse(text, tmp_path / "t") == (auth.digest(PLAIN), auth.digest(HASHED))


@pytest.mark.parametrize(("text", "problem"), [
    ("", "holds no tokens"),
    ("# only a comment\n\n", "holds no tokens"),
    ("sha256:abc\n", ":1: sha256: needs exactly 64 hex digits"),
    ("ok-token\nhas a space\n", ":2: a token is letters"),
])
def test_a_bad_file_names_the_line_and_the_problem(tmp_path, text, problem) -> None:
    with pytest.raises(auth.TokenFileError, match=problem):
        auth.parse(text, tmp_path / "tokens")


def test_a_token_file_is_reread_when_it_changes_and_a_bad_change_keeps_the_tokens(tmp_path, caplog) -> None:
    path = tmp_path / "tokens"
    path.write_text(PLAIN + "\n")
    tokens = auth.TokenFile(path)
    assert tokens.accepts(PLAIN) and not tokens.accepts(HASHED)
    write_atomically(path, f"sha256:{sha(HASHED)}\n")
    assert tokens.accepts(HASHED) and not tokens.accepts(PLAIN)
    write_atomically(path, "# emptied by mistake\n")
    assert tokens.accepts(HASHED)
    assert "API tokens not reloaded, keeping the previous 1" in caplog.text
    path.unlink()
    assert tokens.accepts(HASHED)  # a Secret volume mid-swap: the last good set holds


def test_a_missing_file_at_start_up_is_an_error(tmp_path) -> None:
    with pytest.raises(auth.TokenFileError, match="cannot be read"):
        auth.TokenFile(tmp_path / "absent")


def test_the_protected_endpoints_are_the_apps_prediction_routes() -> None:
    """A renamed view would silently drop out of the protected set: pin the names to the routes."""
    from ride_duration.app import create_app

    app = create_app({"mlflow_tracking_uri": None})
    posts = {r.endpoint for r in app.url_map.iter_rules() if "POST" in (r.methods or ())}
    assert posts == auth.PREDICTION_ENDPOINTS


# --- the service --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "tokens"
    path.write_text(f"# one plain, one hashed\n{PLAIN}\nsha256:{sha(HASHED)}\n")
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory, token_file):
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": "", "API_TOKENS_FILE": str(token_file)}) as s:
        yield s


def post(url: str, body: object, token: str | None = None, scheme: str = "Bearer") -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    status, resp_headers, raw = http("POST", url, json.dumps(body), headers)
    return status, resp_headers, json.loads(raw)


def field(body: dict, dotted: str) -> str:
    value: object = body
    for key in dotted.split("."):
        value = value[key]  # type: ignore[index]
    assert isinstance(value, str), value
    return value


@pytest.mark.parametrize("path", list(ROUTES))
def test_no_token_is_401_in_the_routes_error_shape_with_a_challenge(srv, path) -> None:
    body, message_key = ROUTES[path]
    status, headers, answer = post(srv.url + path, body)
    assert status == 401, answer
    assert headers["WWW-Authenticate"] == 'Bearer realm="ride-duration"'
    assert "bearer token is required" in field(answer, message_key)
    assert headers["X-Request-ID"]
    if path == "/predict":
        assert answer["error"]["code"] == "unauthorized"
    if path == "/invocations":
        assert answer["error_code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize(("token", "scheme"), [("wrong-token", "Bearer"), (PLAIN[:-1], "Bearer"),
                                               (PLAIN + "x", "Bearer"), (sha(HASHED), "Bearer"),
                                               (PLAIN, "Basic"), ("", "Bearer")])
def test_a_wrong_token_or_scheme_is_401_and_never_echoed(srv, path, token, scheme) -> None:
    body, message_key = ROUTES[path]
    status, headers, answer = post(srv.url + path, body, token, scheme)
    assert status == 401, answer
    expected = 'Bearer realm="ride-duration", error="invalid_token"' if scheme == "Bearer" and token else \
        'Bearer realm="ride-duration"'
    assert headers["WWW-Authenticate"] == expected
    assert not token or token not in json.dumps(answer)


@pytest.mark.parametrize("path", list(ROUTES))
@pytest.mark.parametrize("token", [PLAIN, HASHED])
def test_a_listed_token_plain_or_hashed_predicts(srv, path, token) -> None:
    body, _ = ROUTES[path]
    status, headers, answer = post(srv.url + path, body, token, scheme="bearer")  # the scheme is case-insensitive
    assert status == 200, answer
    assert "WWW-Authenticate" not in headers
    assert headers["X-Model-Version"]


@pytest.mark.parametrize("path", ["/health", "/ready", "/ping", "/metrics", "/model", "/version", "/v2",
                                  "/v2/health/ready", f"/v2/models/{MODEL_NAME}", "/openapi.json", "/docs"])
def test_probes_metrics_metadata_and_docs_need_no_token(srv, path) -> None:
    status, headers, _ = http("GET", srv.url + path)
    assert status == 200, path
    assert "WWW-Authenticate" not in headers


def test_a_refused_request_leaves_the_connection_usable(srv) -> None:
    """The 401 body is answered, the unread ride is drained, and the next request on the same
    keep-alive connection is served."""
    conn = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        payload = json.dumps([RIDE] * 200)
        conn.request("POST", "/predict", payload, {"Content-Type": "application/json"})
        first = conn.getresponse()
        assert first.status == 401 and json.loads(first.read())["error"]["code"] == "unauthorized"
        conn.request("POST", "/predict", payload, {"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {PLAIN}"})
        second = conn.getresponse()
        assert second.status == 200 and len(json.loads(second.read())["durations"]) == 200
    finally:
        conn.close()


def test_rotating_the_file_takes_effect_in_every_worker_without_a_restart(srv, token_file) -> None:
    original = token_file.read_text()
    rotated = "rotated-token-5d0c"
    try:
        write_atomically(token_file, f"{rotated}\n")
        # Each worker re-reads on its next request; 20 requests reach both of the 2 workers.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answers = [post(srv.url + "/predict", RIDE, rotated)[0] for _ in range(20)]
            if set(answers) == {200}:
                break
        assert set(answers) == {200}, answers
        assert {post(srv.url + "/predict", RIDE, PLAIN)[0] for _ in range(20)} == {401}
    finally:
        write_atomically(token_file, original)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and post(srv.url + "/predict", RIDE, PLAIN)[0] != 200:
        pass
    assert {post(srv.url + "/predict", RIDE, PLAIN)[0] for _ in range(20)} == {200}
    assert "API tokens reloaded from" in srv.log_text()


def test_tokens_never_reach_the_log(srv) -> None:
    assert post(srv.url + "/predict", RIDE, PLAIN)[0] == 200
    assert post(srv.url + "/predict", RIDE, "a-wrong-token-3e9d")[0] == 401
    log = srv.log_text()
    assert '"status":401' in log.replace(" ", "")  # the refused request was logged ...
    assert PLAIN not in log and HASHED not in log and "a-wrong-token-3e9d" not in log  # ... without a token


def test_auth_is_off_without_the_setting(tmp_path_factory) -> None:
    with running(tmp_path_factory, {"MLFLOW_TRACKING_URI": "", "API_TOKENS_FILE": ""}, workers=1) as plain:
        status, headers, answer = post(plain.url + "/predict", RIDE)
        assert status == 200 and answer["duration"] > 0
        assert "WWW-Authenticate" not in headers


def test_the_service_does_not_start_open_when_the_file_is_missing(tmp_path) -> None:
    missing = tmp_path / "no-such-tokens"
    srv = Server(env={"MLFLOW_TRACKING_URI": "", "API_TOKENS_FILE": str(missing)}, workers=1,
                 log_path=tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        srv.start()  # the start-up bound: on a loaded box the import alone took over 30 s
    srv.stop()
    assert f"API_TOKENS_FILE {missing} cannot be read" in srv.log_text()


def test_the_openapi_document_declares_the_bearer_scheme_and_the_401s(srv) -> None:
    from openapi_spec_validator import validate

    status, _, raw = http("GET", srv.url + "/openapi.json")
    spec = json.loads(raw)
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "A token from API_TOKENS_FILE"}
    secured = {(path, method): op for path, ops in spec["paths"].items() for method, op in ops.items()
               if "security" in op}
    assert set(secured) == {("/predict", "post"), ("/invocations", "post"), ("/v2/models/{name}/infer", "post"),
                            ("/v2/models/{name}/versions/{version}/infer", "post")}
    shapes = {path: op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
              for (path, _), op in secured.items()}
    assert shapes["/predict"] == "Error" and shapes["/invocations"] == "MlflowError"
    assert shapes["/v2/models/{name}/infer"] == "V2Error"


def test_without_tokens_the_openapi_document_has_no_security(tmp_path_factory) -> None:
    from ride_duration.app import create_app

    spec = create_app({"mlflow_tracking_uri": None}).test_client().get("/openapi.json").get_json()
    assert "securitySchemes" not in spec["components"]
    ops = [op for path_ops in spec["paths"].values() for op in path_ops.values()]
    assert ops and not [op for op in ops if "security" in op or "401" in op["responses"]]
