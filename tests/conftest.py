"""Shared fixtures: the app from the factory (Flask tutorial style) and data locations."""

from __future__ import annotations

import contextlib
import os
import shutil
import typing as t
from pathlib import Path

import pytest

from ride_duration import create_app
from tests.support import BUNDLED  # re-exported: tests import it from here
from tests.synthetic import real_month, write_month

REFERENCE_RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}


@pytest.fixture(scope="module", autouse=True)
def _restore_environ_after_module():
    """The same for a module's own module-scoped fixtures (set up before any test's snapshot):
    one that registers models in-process (``mlflow.set_tracking_uri``) left MLFLOW_TRACKING_URI
    to every later module on its xdist worker, whose services and in-process jobs then followed
    that registry instead of the bundled model. Autouse: set up before the module's other fixtures."""
    with _environ_kept():
        yield


@pytest.fixture(autouse=True)
def _restore_environ():
    """Each test starts from the environment the previous one started from.

    In-process MLflow calls change ``os.environ`` for good (``mlflow.set_tracking_uri`` exports
    MLFLOW_TRACKING_URI; ``bound_http`` sets MLFLOW_HTTP_REQUEST_*), and every gunicorn or CLI
    subprocess a later test starts inherits it: a service would follow a registry that is gone.
    """
    with _environ_kept():
        yield


@contextlib.contextmanager
def _environ_kept() -> t.Iterator[None]:
    """``os.environ`` as it was on entry, put back on exit."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def app():
    return create_app({"model_path": BUNDLED / "lin_reg.bin", "mlflow_tracking_uri": None})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled model directory; returns the .bin path."""
    target = tmp_path / "model"
    shutil.copytree(BUNDLED, target)
    return target / "lin_reg.bin"


@pytest.fixture(scope="session")
def synthetic_months(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic training and validation month (parquet)."""
    base = tmp_path_factory.mktemp("tlc")
    return (write_month(base / "train.parquet", n=6000, seed=1),
            write_month(base / "valid.parquet", n=3000, seed=2, month="2021-02"))


@pytest.fixture(scope="session")
def mlflow_server(request, tmp_path_factory) -> t.Iterator[t.Any]:
    """One real ``mlflow server`` for the run, shared by the registry tests that never stop it; each
    of them uses its own model names. Under xdist every worker attaches to the same one (conftest.py
    hands them its directory; tests/mlflow_server.py ``shared``), else this process starts its own.
    Tests that stop or restart their registry (outages) or need another artifact store start their
    own ``MlflowServer``."""
    from tests.mlflow_server import SHARED_DIR_KEY, MlflowServer, shared

    directory = getattr(request.config, "workerinput", {}).get(SHARED_DIR_KEY)
    if directory:
        yield shared(Path(directory))
        return
    with MlflowServer(tmp_path_factory.mktemp("mlflow-shared")) as server:
        yield server


def require_real(month: str) -> Path:
    """The real TLC file for ``month``, or skip with the reason."""
    path = real_month(month)
    if path is None:
        pytest.skip(f"real TLC data for {month} not found (set TLC_DATA_DIR; default ../shared/data)")
    return path
