"""Registry artifacts in object storage: a real S3 API (moto server) and a real GCS API
(gcp-storage-emulator), both on loopback, behind a real ``mlflow server``.

Proxied (the default, ``--artifacts-destination s3://…`` / ``gs://…``): ``train.py --register``
(its ``main``, run in this process: the upload is the test, not the command line) uploads through
the tracking server, the objects land in the bucket, and the service, with
only ``MLFLOW_TRACKING_URI`` and no cloud SDK importable (like every test service, it can import only
the image's packages: ``tests/image_only``), serves that version with the predictions of the bucket's own skops file.

Direct (``--no-serve-artifacts --default-artifact-root s3://…``): clients get ``s3://`` URIs. A
service without boto3 (as the image is) says so in ``/ready`` (503 with MODEL_FALLBACK=false,
or the bundled model with the reason), never a 500; with boto3 and the S3 settings it serves
straight from the bucket.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from tests.mlflow_server import MlflowServer
from tests.registry.test_registry import Service, train_here
from tests.support import Server, free_port, http, post_json
from tests.synthetic import write_month

pytestmark = pytest.mark.slow

RIDES = [{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2},
         {"PULocationID": 3, "DOLocationID": 17, "trip_distance": 0.8}]
BUCKET = "mlflow-artifacts"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("months")
    return (write_month(tmp / "train.parquet", n=3000, seed=31),
            write_month(tmp / "valid.parquet", n=1500, seed=32, month="2021-02"))


@pytest.fixture(scope="module")
def s3() -> t.Iterator[t.Any]:
    """A moto S3 server on loopback with one bucket; yields a boto3 client bound to it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"})
    client.create_bucket(Bucket=BUCKET)
    client.endpoint = f"http://127.0.0.1:{port}"
    yield client
    server.stop()


@pytest.fixture(scope="module")
def gcs() -> t.Iterator[t.Any]:
    """gcp-storage-emulator on loopback with one bucket; yields its host URL."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def service(registry: MlflowServer, name: str, tmp_path: Path, image_only: bool = True, **env: str) -> Server:
    """The service following ``name``; like the image it cannot import a cloud SDK, unless ``image_only=False``."""
    return Service(env={"MLFLOW_TRACKING_URI": registry.url, "MODEL_NAME": name, "MODEL_POLL_SECONDS": "0",
                       "MODEL_LOAD_TIMEOUT": "60", **env},
                  workers=1, log_path=tmp_path / f"{name}.log", image_only=image_only)


def served(server: Server) -> tuple[dict[str, t.Any], list[float]]:
    status, _, body = http("GET", server.url + "/model")
    assert status == 200, body
    status, _, answer = post_json(server.url + "/predict", RIDES)
    assert status == 200, answer
    return json.loads(body), answer["durations"]


def bucket_predictions(blob: bytes) -> list[float]:
    """What the skops file stored in the bucket predicts (the logged pipeline takes raw ride columns)."""
    import pandas as pd

    from ride_duration.registry import safe_format

    return [float(v) for v in safe_format.loads(blob).predict(pd.DataFrame(RIDES))]


def test_s3_proxied_train_register_serve_without_boto3(s3, months, tmp_path):
    env = {"MLFLOW_S3_ENDPOINT_URL": s3.endpoint, **AWS_ENV}
    with MlflowServer(tmp_path / "mlflow", artifacts=f"s3://{BUCKET}/proxied", env=env) as registry:
        code, gate = train_here(registry, "s3-proxied", *months)
        assert code == 0, gate
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="proxied/").get("Contents", [])]
        models = [k for k in keys if k.endswith("/model.skops")]
        assert models and any(k.endswith("/MLmodel") for k in keys), keys
        blob = s3.get_object(Bucket=BUCKET, Key=models[0])["Body"].read()
        with service(registry, "s3-proxied", tmp_path, MODEL_FALLBACK="false") as server:
            server.wait("/ready")
            info, durations = served(server)
    assert info["registered_version"] == "1" and info["source"] == "registry"
    assert durations == pytest.approx(bucket_predictions(blob), rel=1e-9)


def test_gcs_proxied_train_register_serve_without_google_cloud(gcs, months, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    env = {"STORAGE_EMULATOR_HOST": gcs}
    with MlflowServer(tmp_path / "mlflow", artifacts=f"gs://{BUCKET}/proxied", env=env) as registry:
        code, gate = train_here(registry, "gcs-proxied", *months)
        assert code == 0, gate
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": gcs})
        names = [b.name for b in client.list_blobs(BUCKET, prefix="proxied/")]
        models = [n for n in names if n.endswith("/model.skops")]
        assert models and any(n.endswith("/MLmodel") for n in names), names
        blob = client.bucket(BUCKET).blob(models[0]).download_as_bytes()
        with service(registry, "gcs-proxied", tmp_path, MODEL_FALLBACK="false") as server:
            server.wait("/ready")
            info, durations = served(server)
    assert info["registered_version"] == "1"
    assert durations == pytest.approx(bucket_predictions(blob), rel=1e-9)


def test_direct_s3_uris_need_boto3_and_the_service_says_so(s3, months, tmp_path, monkeypatch):
    env = {"MLFLOW_S3_ENDPOINT_URL": s3.endpoint, **AWS_ENV}
    for name, value in env.items():  # the trainer uploads straight to the bucket here
        monkeypatch.setenv(name, value)
    with MlflowServer(tmp_path / "mlflow", artifacts=f"s3://{BUCKET}/direct", serve_artifacts=False,
                      env=env) as registry:
        code, gate = train_here(registry, "s3-direct", *months)
        assert code == 0, gate
        assert any(o["Key"].endswith("/model.skops") for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="direct/")
                   ["Contents"])
        for name in env:  # the service gets none of the S3 settings unless a case says so
            monkeypatch.delenv(name)

        with service(registry, "s3-direct", tmp_path, MODEL_FALLBACK="false") as server:
            server.wait("/health")
            status, _, body = http("GET", server.url + "/ready")
            assert status == 503
            reason = json.loads(body)["reason"]
            assert "boto3" in reason and "s3://" in reason and "--serve-artifacts" in reason
            status, _, answer = post_json(server.url + "/predict", RIDES)
            assert status == 503 and answer["error"]["code"] == "model_not_ready"

        with service(registry, "s3-direct", tmp_path) as server:  # default: fall back
            server.wait("/ready")
            ready = json.loads(http("GET", server.url + "/ready")[2])
            assert ready["source"] == "bundled" and "boto3" in ready["fallback_reason"]

        with service(registry, "s3-direct", tmp_path, image_only=False, MODEL_FALLBACK="false",
                     **env) as server:  # boto3 present
            server.wait("/ready")
            info, _ = served(server)
            assert info["registered_version"] == "1" and info["source"] == "registry"
