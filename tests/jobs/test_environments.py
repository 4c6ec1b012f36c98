"""Dev → Test → Accept → Prod promotion through the champion/challenger gate, against a real
``mlflow server`` (sqlite + local artifacts) with synthetic TLC months.

A model enters dev from ``train.py --register --alias dev``; ``python -m ride_duration promote
--from A --to B`` then moves the version at A's alias to B's only through the gate: first promotion
into an empty alias, a better model replacing the champion, a worse one kept out, a tampered one
refused by the serving checks, no skipping environments, and "already there" being a no-op.
Most steps run the CLI's ``main`` in-process (the same code path, without a new interpreter and its
``import mlflow`` per step); the first model enters dev through ``train.py`` and one promotion runs
``python -m ride_duration promote``, as a user would.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression

from ride_duration import __main__ as cli
from ride_duration.features import prepare_features
from ride_duration.jobs import data
from ride_duration.jobs.environments import ENVIRONMENTS, ORDER, check_step
from ride_duration.registry import aliases, register
from tests.mlflow_server import MlflowServer
from tests.support import ROOT, untraced
from tests.synthetic import write_month

pytestmark = pytest.mark.slow

NAME = "env-promotion"


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer) -> MlflowServer:
    return mlflow_server  # the run's shared server (tests/conftest.py); NAME is this module's


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``weak`` (300 rides: a poor model), ``good`` (6,000 rides) and ``valid``."""
    tmp = tmp_path_factory.mktemp("months")
    return {"weak": write_month(tmp / "weak.parquet", n=300, seed=21),
            "good": write_month(tmp / "good.parquet", n=6000, seed=22),
            "valid": write_month(tmp / "valid.parquet", n=3000, seed=23, month="2021-02")}


@pytest.fixture(scope="module")
def client(registry: MlflowServer) -> t.Iterator[t.Any]:
    """MLflow client plus the environment the in-process CLI reads; restored afterwards."""
    import mlflow

    saved = dict(os.environ)
    os.environ["MLFLOW_TRACKING_URI"] = registry.url
    mlflow.set_tracking_uri(registry.url)
    yield mlflow.MlflowClient(registry.url)
    os.environ.clear()
    os.environ.update(saved)


def train_cli(registry: MlflowServer, train: Path, valid: Path) -> tuple[int, str]:
    """``train.py --register --alias dev``: how a model enters the first environment."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.url}
    done = subprocess.run([sys.executable, "train.py", "--train-data", str(train), "--valid-data", str(valid),
                           "--no-bundle", "--register", "--model-name", NAME, "--alias", "dev"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    gate = [line for line in done.stdout.splitlines() if line.startswith("gate:")]
    assert gate, f"no gate line (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.returncode, gate[-1]


def train_in_process(capsys: pytest.CaptureFixture[str], train: Path, valid: Path) -> tuple[int, str]:
    """``train.py --register --alias dev`` through its ``main`` in this process."""
    from ride_duration.jobs import train as train_job

    capsys.readouterr()
    code = train_job.main(["--train-data", str(train), "--valid-data", str(valid), "--no-bundle", "--register",
                           "--model-name", NAME, "--alias", "dev"])
    gate = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gate:")]
    assert gate, f"no gate line (exit {code})"
    return code, gate[-1]


def promote_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``python -m ride_duration promote ARGS`` in-process; returns the exit code and the gate line."""
    capsys.readouterr()
    code = cli.main(["promote", "--model-name", NAME, *args])
    gate = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gate:")]
    assert len(gate) == 1, gate
    return code, gate[0]


def at(client: t.Any, env: str) -> str | None:
    return aliases.champion_version(client, NAME, ENVIRONMENTS[env])


@untraced()  # set-up: the train/retrain tests cover log_and_register
def register_by_hand(client: t.Any, train: Path, valid: Path) -> str:
    """A version registered without the gate and put on @dev by hand (someone bypassed train.py)."""
    rides = data.read_rides(str(train))
    dv = DictVectorizer()
    lr = LinearRegression().fit(dv.fit_transform(prepare_features(rides.to_dict("records"))), rides["duration"])
    valid_rides = data.read_rides(str(valid))
    info = {"trained_at": "2026-01-01T00:00:00+00:00", "metrics": {"valid_rmse": 0.0},
            "train_data": {"source": str(train), "rows": len(rides)},
            "valid_data": {"source": str(valid), "rows": len(valid_rides)}, "params": {"model": "LinearRegression"}}
    version, _ = register.log_and_register(argparse.Namespace(experiment="env-tests"), NAME, dv, lr, info, valid_rides)
    client.set_registered_model_alias(NAME, "dev", version)
    return version


def test_environment_order_and_steps() -> None:
    assert ORDER == ["dev", "test", "accept", "prod"]
    assert ENVIRONMENTS["prod"] == "production"  # what compose, k8s/base and the service default follow
    assert len(set(ENVIRONMENTS.values())) == 4
    assert check_step("dev", "test") is None and check_step("accept", "prod") is None
    assert "next environment after dev is test" in check_step("dev", "accept")
    assert "last environment" in check_step("prod", "dev")
    assert check_step("test", "dev") is not None


def test_promotion_walks_dev_to_prod_only_through_the_gate(registry, months, client, capsys) -> None:
    # v1 (weak) enters dev and walks all the way up: every alias is empty, so each gate promotes.
    code, line = train_cli(registry, months["weak"], months["valid"])
    assert code == 0 and f"promoted {NAME} v1 to @dev" in line, line
    code, line = promote_cli(capsys, "--from", "dev", "--to", "test", "--valid-data", str(months["valid"]))
    assert code == 0 and "to @test" in line and "no @test version yet" in line, line
    code, line = promote_cli(capsys, "--from", "dev", "--to", "accept")
    assert code == 2 and "accept does not follow dev" in line, line  # a bad flag: exit 2
    assert at(client, "accept") is None
    code, line = promote_cli(capsys, "--from", "test", "--to", "accept")  # validation file logged with the run
    assert code == 0 and "to @accept" in line, line
    done = subprocess.run([sys.executable, "-m", "ride_duration", "promote", "--from", "accept", "--to", "prod",
                           "--model-name", NAME], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": registry.url})
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith(f"gate: promoted {NAME} v1 to @production")
    assert [at(client, env) for env in ORDER] == ["1", "1", "1", "1"]

    # v2 (good) beats v1 in dev, then in test on the same validation rides.
    code, line = train_in_process(capsys, months["good"], months["valid"])
    assert code == 0 and "v2 to @dev" in line and "< champion v1" in line, line
    code, line = promote_cli(capsys, "--from", "dev", "--to", "test")
    assert code == 0 and "v2 to @test" in line and "< champion v1" in line, line
    tags = client.get_model_version(NAME, "2").tags
    assert tags["gate.test"] == "promoted" and tags["previous_test"] == "1"
    assert [at(client, env) for env in ORDER] == ["2", "2", "1", "1"]
    code, line = promote_cli(capsys, "--from", "dev", "--to", "test")
    assert code == 0 and "already @test" in line, line

    # v3 (weak again) put on @dev by hand: the gate keeps it out of test.
    v3 = register_by_hand(client, months["weak"], months["valid"])
    code, line = promote_cli(capsys, "--from", "dev", "--to", "test")
    assert code == 3 and f"v{v3} rejected" in line and "is not lower than champion v2" in line, line
    assert at(client, "test") == "2"
    tags = client.get_model_version(NAME, v3).tags
    assert tags["gate.test"] == "rejected" and "not lower" in tags["gate_reason.test"]

    # v4 (good weights) whose artifact no longer matches its recorded sha256: refused before scoring.
    v4 = register_by_hand(client, months["good"], months["valid"])
    client.set_model_version_tag(NAME, v4, "model_sha256", "0" * 64)
    code, line = promote_cli(capsys, "--from", "dev", "--to", "test")
    assert code == 3 and "serving checks" in line and "sha256 mismatch" in line, line
    assert at(client, "test") == "2"

    # v2 continues to accept: better than v1 there too; prod still serves v1 until promoted.
    code, line = promote_cli(capsys, "--from", "test", "--to", "accept")
    assert code == 0 and "v2 to @accept" in line, line
    assert [at(client, env) for env in ORDER] == [v4, "2", "2", "1"]


def test_nothing_to_promote_is_an_error(client, capsys) -> None:
    code = cli.main(["promote", "--model-name", "no-such-model", "--from", "dev", "--to", "test"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1 and line.startswith("gate: error: nothing to promote from dev"), line
