import json
import pickle
import subprocess
import sys

import pytest

from ride_duration.jobs import data, train
from ride_duration.model.loading import load_file
from tests.conftest import BUNDLED, require_real
from tests.synthetic import ROOT, make_rides

RMSE_BOUND = 7.48
REPRODUCE_ABS = 1e-4
"""lsqr stopped at tol=1e-8 lands on slightly different points under different BLAS kernels
(7.479533 with OpenBLAS's Haswell kernels, 7.479590 with the one it picks by itself here)."""


def test_clean_keeps_rides_of_one_to_sixty_minutes():
    frame = data.clean(make_rides(2000, seed=3))
    assert frame["duration"].between(1, 60).all()
    assert 0 < len(frame) < 2000
    assert frame["PULocationID"].dtype == "int64"


def test_month_resolves_to_the_public_url():
    assert data.resolve_source("2021-01").endswith("/green_tripdata_2021-01.parquet")
    assert data.resolve_source("/data/x.parquet") == "/data/x.parquet"


def test_month_is_read_locally_when_the_file_is_there(tmp_path):
    (tmp_path / "green_tripdata_2021-01.parquet").write_bytes(b"")
    assert data.resolve_source("2021-01", tmp_path) == str(tmp_path / "green_tripdata_2021-01.parquet")
    assert data.resolve_source("2021-02", tmp_path).startswith("https://")


def test_training_on_synthetic_data_writes_a_loadable_bundle(synthetic_months, tmp_path):
    train_file, valid_file = synthetic_months
    code = train.main(["--train-data", str(train_file), "--valid-data", str(valid_file),
                       "--output-dir", str(tmp_path)])
    assert code == train.EXIT_PROMOTED
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["valid_data"]["rows"] > 2500
    assert 0 < meta["metrics"]["valid_rmse"] < 4.0  # noise sd is 2 minutes
    model = load_file(tmp_path / "lin_reg.bin")
    assert model.info["sha256_verified"] and model.version == meta["version"]
    with open(tmp_path / "lin_reg.bin", "rb") as f:
        dv, lr = pickle.load(f)
    assert type(dv).__name__ == "DictVectorizer" and type(lr).__name__ == "LinearRegression"


def test_cli_help_documents_the_options():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    for option in ("--train-data", "--valid-data", "--output-dir", "--register", "--model-name"):
        assert option in out


def test_bundled_metadata_records_the_rmse_bound():
    meta = json.loads((BUNDLED / "metadata.json").read_text())
    assert meta["metrics"]["valid_rmse"] <= RMSE_BOUND
    assert meta["train_data"]["source"].endswith("green_tripdata_2021-01.parquet")
    assert meta["valid_data"]["source"].endswith("green_tripdata_2021-02.parquet")


def test_real_data_reproduces_the_bundled_rmse(tmp_path):
    train_file, valid_file = require_real("2021-01"), require_real("2021-02")
    code = train.main(["--train-data", str(train_file), "--valid-data", str(valid_file),
                       "--output-dir", str(tmp_path)])
    assert code == train.EXIT_PROMOTED
    actual = json.loads((tmp_path / "metadata.json").read_text())
    expected = json.loads((BUNDLED / "metadata.json").read_text())
    assert actual["metrics"]["valid_rmse"] <= RMSE_BOUND
    assert actual["metrics"]["valid_rmse"] == pytest.approx(expected["metrics"]["valid_rmse"], abs=REPRODUCE_ABS)
    assert (actual["train_data"]["rows"], actual["valid_data"]["rows"]) == (73908, 61921)
