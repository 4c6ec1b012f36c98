import json
import pickle

import pytest

from ride_duration.errors import ExitCode
from ride_duration.jobs import data, train
from ride_duration.model.loading import load_file
from tests.conftest import BUNDLED, require_real
from tests.synthetic import make_rides

RMSE_BOUND = 6.60
"""Issue 19's bound on all 1-60 minute rides of 2021-02 trained on 2021-01 (the course's model: 7.4795)."""
PLAUSIBLE_RMSE_BOUND = 6.0
"""Issue 19's goal on the plausible rides of 2021-02 (flagged-v2: 6.3471)."""
FLAGGED_PLAUSIBLE_RMSE = 6.3471
"""The champion the bundle replaced (flagged-v2, issue 14) on the plausible rides of 2021-02."""
COURSE_RMSE = 7.48
"""The course's model (course-v1, plain linear regression) on all 1-60 minute rides of 2021-02."""
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
    assert code == ExitCode.OK
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["valid_data"]["rows"] > 2500
    assert 0 < meta["metrics"]["valid_rmse"] < 4.0  # noise sd is 2 minutes
    assert 0 < meta["metrics"]["valid_rmse_plausible"] <= meta["metrics"]["valid_rmse"] + 1e-9
    assert meta["plausibility"]["valid_plausible"] <= meta["plausibility"]["valid_rides"] == meta["valid_data"]["rows"]
    model = load_file(tmp_path / "lin_reg.bin")
    assert model.info["sha256_verified"] and model.version == meta["version"]
    with open(tmp_path / "lin_reg.bin", "rb") as f:
        dv, lr = pickle.load(f)
    assert type(dv).__name__ == "DictVectorizer" and type(lr).__name__ == "MonotoneDuration"
    assert model.step.to_dict() == meta["feature_step"] == {"name": "monotone-v3", "max_miles": 60.0}
    assert model.fast is not None  # the compiled monotone path matched the general one


def test_cli_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exc:  # train.py's main, in-process: argparse prints the help and exits 0
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    for option in ("--train-data", "--valid-data", "--output-dir", "--register", "--model-name"):
        assert option in out


@pytest.mark.slow
def test_real_data_beats_the_course_model_through_the_gate_and_reproduces_the_bundle(tmp_path):
    """What training produces on 2021-01/2021-02: the course's model (course-v1) first, then the
    default model gated against it: promoted on the plausible-ride RMSE, both metrics under their
    bounds. The committed bundle must be what this run produces (same metrics, rows, plausibility
    counts, feature step and parameters)."""
    train_file, valid_file = require_real("2021-01"), require_real("2021-02")
    common = ["--train-data", str(train_file), "--valid-data", str(valid_file)]
    course, default = tmp_path / "course", tmp_path / "default"
    assert train.main([*common, "--output-dir", str(course), "--feature-step", "course-v1", "--alpha", "0"]) == 0
    code = train.main([*common, "--output-dir", str(default), "--gate-against", str(course)])
    assert code == ExitCode.OK
    champion = json.loads((course / "metadata.json").read_text())
    actual = json.loads((default / "metadata.json").read_text())
    assert champion["metrics"]["valid_rmse"] == pytest.approx(COURSE_RMSE, abs=0.001)
    assert actual["metrics"]["valid_rmse"] <= RMSE_BOUND
    assert actual["metrics"]["valid_rmse_plausible"] <= PLAUSIBLE_RMSE_BOUND
    assert actual["metrics"]["champion_valid_rmse"] == pytest.approx(champion["metrics"]["valid_rmse"], rel=1e-9)
    assert actual["gate"]["decision"] == "promoted" and actual["gate"]["champion"] == champion["version"]
    assert actual["gate"]["champion_feature_step"] == {"name": "course-v1"}
    assert actual["feature_step"] == {"name": "monotone-v3", "max_miles": 60.0}
    assert (actual["train_data"]["rows"], actual["valid_data"]["rows"]) == (73908, 61921)
    assert actual["plausibility"]["valid_plausible"] < actual["valid_data"]["rows"]

    bundled = json.loads((BUNDLED / "metadata.json").read_text())
    for metric in ("valid_rmse", "valid_rmse_plausible"):
        assert bundled["metrics"][metric] == pytest.approx(actual["metrics"][metric], abs=REPRODUCE_ABS)
    assert bundled["plausibility"] == actual["plausibility"]
    assert (bundled["feature_step"], bundled["params"]) == (actual["feature_step"], actual["params"])
    assert (bundled["train_data"]["rows"], bundled["valid_data"]["rows"]) == (73908, 61921)
    assert bundled["gate"]["decision"] == "promoted"
    assert bundled["gate"]["champion_feature_step"] == {"name": "flagged-v2", "max_miles": 30.0}
    assert bundled["metrics"]["champion_valid_rmse_plausible"] == pytest.approx(FLAGGED_PLAUSIBLE_RMSE, abs=0.001)
    assert bundled["train_data"]["source"].endswith("green_tripdata_2021-01.parquet")
    assert bundled["valid_data"]["source"].endswith("green_tripdata_2021-02.parquet")


def broken_odometer_month(path, seed, month="2021-01"):
    """A synthetic month where 1 ride in 50 records an absurd distance, as 2021-01's 244,152-mile ride."""
    frame = make_rides(4000, seed=seed, month=month)
    frame.loc[frame.index % 50 == 7, "trip_distance"] = 5000.0
    frame.to_parquet(path, index=False)
    return str(path)


def test_the_gate_writes_a_bundle_only_over_a_worse_champion(tmp_path):
    """course-v1 first; monotone-v3 must beat it on the same (plausible) rides to be written; course-v1 again is
    kept out."""
    train_file = broken_odometer_month(tmp_path / "train.parquet", 41)
    valid_file = broken_odometer_month(tmp_path / "valid.parquet", 42, "2021-02")
    champion, challenger = tmp_path / "champion", tmp_path / "challenger"
    common = ["--train-data", train_file, "--valid-data", valid_file]
    assert train.main([*common, "--output-dir", str(champion), "--feature-step", "course-v1", "--alpha", "0"]) == 0
    before = json.loads((champion / "metadata.json").read_text())

    code = train.main([*common, "--output-dir", str(challenger), "--gate-against", str(champion), "--alpha", "0"])

    meta = json.loads((challenger / "metadata.json").read_text())
    assert code == ExitCode.OK
    assert meta["gate"]["champion"] == before["version"] and meta["gate"]["decision"] == "promoted"
    assert meta["metrics"]["champion_valid_rmse"] == pytest.approx(before["metrics"]["valid_rmse"], rel=1e-9)
    assert meta["metrics"]["valid_rmse_plausible"] < meta["metrics"]["champion_valid_rmse_plausible"]
    assert "plausible-ride RMSE" in meta["gate"]["reason"]
    assert load_file(challenger / "lin_reg.bin").step.to_dict() == meta["feature_step"]

    again = tmp_path / "again"
    code = train.main([*common, "--output-dir", str(again), "--gate-against", str(challenger / "lin_reg.bin"),
                       "--feature-step", "course-v1", "--alpha", "0"])
    assert code == ExitCode.KEPT_CHAMPION
    assert not again.exists()
