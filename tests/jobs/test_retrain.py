"""``python -m ride_duration retrain`` against a real MLflow server: promoted, kept champion, no data, error.

The synthetic tests need no TLC files; the real ones use ../shared/data (skipped without, which
fails under STRICT_SKIPS=1): the 2021 champion against a 2023 challenger.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ride_duration.__main__ import main
from ride_duration.errors import ExitCode
from ride_duration.jobs import months, train
from tests.conftest import require_real
from tests.mlflow_server import MlflowServer
from tests.support import untraced
from tests.synthetic import two_worlds


@pytest.fixture(scope="module")
def registry(mlflow_server):
    return mlflow_server  # the run's shared server (tests/conftest.py); the model names are this module's


@pytest.fixture
def env(monkeypatch, registry):
    def set_env(data_dir: Path) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
        monkeypatch.setenv("TLC_DATA_DIR", str(data_dir))
        monkeypatch.setenv("TLC_DOWNLOAD", "false")
    return set_env


def alias_version(registry: MlflowServer, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.url, registry_uri=registry.url)
    return str(client.get_model_version_by_alias(name, "production").version)


def gate_tag(registry: MlflowServer, name: str, version: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=registry.url, registry_uri=registry.url)
    return client.get_model_version(name, version).tags.get("gate", "")


def last_line(capsys, prefix: str) -> str:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(prefix)]
    assert lines, f"no {prefix!r} line printed"
    return lines[-1]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """2030-0x: the old world; 2031-0x: other zones and slower traffic (4 instead of 2.5 min per mile)."""
    return two_worlds(tmp_path_factory.mktemp("tlc"), n=4000, seed=1)


def test_next_and_previous_month():
    assert months.next_month("2023-01") == "2023-02"
    assert months.next_month("2023-12") == "2024-01"
    assert months.previous_month("2024-01") == "2023-12"
    assert months.previous_month("2024-03") == "2024-02"


def test_latest_is_the_newest_month_with_a_month_after_it(synthetic_dir):
    from ride_duration.config import Settings

    settings = Settings(tlc_data_dir=synthetic_dir, tlc_download=False)
    assert months.latest_month(settings) == "2031-01"
    with pytest.raises(months.NoData):
        months.latest_month(Settings(tlc_data_dir=synthetic_dir / "empty", tlc_download=False))


def test_synthetic_challenger_promoted_then_a_worse_one_kept(registry, env, synthetic_dir, tmp_path, capsys):
    env(synthetic_dir)
    name = "synthetic-retrain"
    with untraced():  # the champion, set up by the training job (tests/jobs/test_train.py covers it)
        assert train.main(["--train-data", "2030-01", "--valid-data", "2030-02", "--data-dir", str(synthetic_dir),
                           "--register", "--no-bundle", "--model-name", name]) == ExitCode.OK
    assert alias_version(registry, name) == "1"

    code = main(["retrain", "--month", "2031-01", "--model-name", name, "--report-dir", str(tmp_path / "r")])
    assert code == ExitCode.OK
    assert last_line(capsys, "retrain:").startswith("retrain: promoted")
    assert alias_version(registry, name) == "2"
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["reference"]["source"].endswith("green_tripdata_2030-01.parquet")  # the champion's training data
    assert report["drift_detected"] is True
    assert (tmp_path / "r" / "metrics.prom").is_file()

    # a challenger trained on the old world, judged on the new one: the 2031 champion stays
    code = main(["retrain", "--month", "2030-01", "--valid-month", "2031-02", "--model-name", name])
    assert code == ExitCode.KEPT_CHAMPION
    assert last_line(capsys, "retrain:").startswith("retrain: kept champion")
    assert alias_version(registry, name) == "2"
    assert gate_tag(registry, name, "3") == "rejected"


def test_missing_month_is_no_data(env, synthetic_dir, capsys):
    env(synthetic_dir)
    assert main(["retrain", "--month", "2031-05", "--model-name", "no-data"]) == ExitCode.BAD_INPUT
    assert "not in" in last_line(capsys, "retrain: no data")


def test_without_tracking_uri_is_an_error(monkeypatch, synthetic_dir, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TLC_DATA_DIR", str(synthetic_dir))
    assert main(["retrain", "--month", "2030-01"]) == ExitCode.ERROR
    assert "MLFLOW_TRACKING_URI" in last_line(capsys, "retrain: error")


def test_bad_month_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["retrain", "--month", "2023-13"])
    assert exc.value.code == 2


@pytest.mark.slow
@pytest.mark.untraced  # the synthetic test above runs the same code; traced, this one cost 44 CPU s instead of 21
def test_real_2023_challenger_beats_the_2021_champion_and_2021_loses_on_2023(registry, env, tmp_path, capsys):
    paths = [require_real(m) for m in ("2021-01", "2021-02", "2023-01", "2023-02")]
    data_dir = paths[0].parent
    env(data_dir)
    name = "real-retrain"
    assert train.main(["--train-data", "2021-01", "--valid-data", "2021-02", "--data-dir", str(data_dir),
                       "--register", "--no-bundle", "--model-name", name]) == ExitCode.OK

    code = main(["retrain", "--month", "2023-01", "--model-name", name, "--report-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    gate = [line for line in out.splitlines() if line.startswith("gate:")][-1]
    assert "promoted" in gate and "same 62574 validation rides" in gate  # 2023-02's 1-60 minute rides
    assert alias_version(registry, name) == "2"
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["reference"]["source"].endswith("green_tripdata_2021-01.parquet")
    assert report["features"]["PULocationID"]["drift"] is True  # 2021 -> 2023 moved the pick-up zones
    assert report["quality"]["n"] == 65946  # the champion on 2023-01's 1-60 minute rides

    # the worse challenger: the 2021-01 fit again, judged on the same 2023-02 rides as the 2023 champion
    code = main(["retrain", "--month", "2021-01", "--valid-month", "2023-02", "--model-name", name])
    out = capsys.readouterr().out
    assert code == ExitCode.KEPT_CHAMPION, out
    assert "is not lower than champion v2" in [line for line in out.splitlines() if line.startswith("gate:")][-1]
    assert alias_version(registry, name) == "2"
    assert gate_tag(registry, name, "3") == "rejected"
