"""Promotion on live evidence: ``retrain``/``promote --require-shadow-evidence N --shadow-evidence report.json``.

The rule itself (pure, no registry), the report and flag checks (exit 2 before the registry is
asked), and the whole walk against a real MLflow server with small synthetic months: retrain
puts its new candidate under ``@challenger``; the next retrain promotes that challenger only when
``evaluate``'s report compares it with the current ``@production`` on at least N rides with a
lower live RMSE. The reports are written here in the format ``evaluate`` writes (SPEC20.md).
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest

from ride_duration.__main__ import main
from ride_duration.errors import BadInput, ExitCode
from ride_duration.jobs import train
from ride_duration.registry import shadow_evidence
from ride_duration.registry.shadow_evidence import Report, judge
from tests.jobs.test_bad_inputs import assert_one_clean_line, run_in_process
from tests.support import untraced
from tests.synthetic import two_worlds

NAME = "live-evidence"


def comparison(champion: str, challenger: str, n: int, champion_rmse: float | None,
               challenger_rmse: float | None) -> dict[str, t.Any]:
    mae = {"champion_mae": None if champion_rmse is None else champion_rmse * 0.75,
           "challenger_mae": None if challenger_rmse is None else challenger_rmse * 0.75}
    return {"champion": champion, "challenger": challenger, "n": n, "champion_rmse": champion_rmse,
            "challenger_rmse": challenger_rmse, **mae}


def report(*comparisons: dict[str, t.Any]) -> dict[str, t.Any]:
    """A report.json as ``evaluate`` writes it (SPEC20.md), with the given comparisons."""
    versions = {}
    for c in comparisons:
        versions[c["champion"]] = {"role": "served", "n": c["n"], "rmse": c["champion_rmse"], "mae": c["champion_mae"],
                                   "bias": 0.1, "plausible_n": c["n"], "plausible_rmse": c["champion_rmse"]}
        versions[c["challenger"]] = {"role": "shadow", "n": c["n"], "rmse": c["challenger_rmse"],
                                     "mae": c["challenger_mae"], "bias": -0.1, "plausible_n": c["n"],
                                     "plausible_rmse": c["challenger_rmse"]}
    n = max((c["n"] for c in comparisons), default=0)
    return {"generated_at": "2031-03-01T00:00:00+00:00", "predictions": ["/var/log/ride-duration/predictions"],
            "actuals": "/data/actuals.parquet",
            "rides": {"predicted": n + 5, "with_actuals": n + 2, "without_actuals": 3, "outside_filter": 2},
            "filter": "1 <= actual_duration <= 60", "versions": versions, "comparisons": list(comparisons)}


def write(path: Path, body: t.Any) -> Path:
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


# ---- the rule -------------------------------------------------------------------------------------

RULE_CASES = [
    ("better-on-enough-rides", [comparison("m-v1", "m-v2", 500, 7.0, 6.5)], "m-v1", 100, True, "6.5000 < m-v1 7.0000"),
    ("exactly-n-rides", [comparison("m-v1", "m-v2", 100, 7.0, 6.9)], "m-v1", 100, True, "on the same 100 rides"),
    ("too-few-rides", [comparison("m-v1", "m-v2", 99, 7.0, 6.0)], "m-v1", 100, False, "99 rides compared"),
    ("not-better", [comparison("m-v1", "m-v2", 500, 7.0, 7.0)], "m-v1", 100, False, "is not lower than m-v1"),
    ("worse", [comparison("m-v1", "m-v2", 500, 7.0, 7.5)], "m-v1", 100, False, "7.5000 is not lower"),
    ("champion-is-not-the-current-one", [comparison("m-v0", "m-v2", 500, 9.0, 6.0)], "m-v1", 100, False,
     "only with m-v0"),
    ("another-challenger", [comparison("m-v1", "m-v3", 500, 7.0, 6.0)], "m-v1", 100, False,
     "no comparison of m-v2 against the current @production m-v1"),
    ("no-rmse", [comparison("m-v1", "m-v2", 500, None, None)], "m-v1", 100, False, "no finite live RMSE"),
    ("no-champion", [comparison("m-v1", "m-v2", 500, 7.0, 6.0)], None, 100, False, "no @production version"),
]


@pytest.mark.parametrize(("comparisons", "champion", "required", "promote", "why"), [c[1:] for c in RULE_CASES],
                         ids=[c[0] for c in RULE_CASES])
def test_the_rule(comparisons, champion, required, promote, why):
    evidence = judge(Report.model_validate(report(*comparisons)), "r.json", "m-v2", champion, required)
    assert (evidence.promote, why in evidence.reason) == (promote, True), evidence.reason
    tags = evidence.tags()
    assert tags["shadow_evidence.decision"] == ("promote" if promote else "keep")
    assert tags["shadow_evidence.reason"] == evidence.reason and tags["shadow_evidence.required_n"] == str(required)


def test_the_rule_without_a_report_keeps_and_the_numbers_are_tagged():
    missing = judge(None, None, "m-v2", "m-v1", 10)
    assert (missing.promote, missing.reason) == (False, "no live evidence for m-v2: no --shadow-evidence report given")
    found = judge(Report.model_validate(report(comparison("m-v1", "m-v2", 40, 7.25, 6.5),
                                               comparison("m-v1", "m-v2", 60, 7.5, 6.25))), "r.json", "m-v2",
                  "m-v1", 50)
    assert found.promote  # the comparison with the most rides counts
    assert found.tags() == {
        "shadow_evidence.decision": "promote", "shadow_evidence.reason": found.reason,
        "shadow_evidence.n": "60", "shadow_evidence.required_n": "50", "shadow_evidence.champion_rmse": "7.5",
        "shadow_evidence.challenger_rmse": "6.25", "shadow_evidence.champion_mae": "5.625",
        "shadow_evidence.challenger_mae": "4.6875", "shadow_evidence.champion": "m-v1",
        "shadow_evidence.challenger": "m-v2", "shadow_evidence.report": "r.json",
        "shadow_evidence.generated_at": "2031-03-01T00:00:00+00:00"}


@pytest.mark.parametrize(("body", "problem"), [
    (None, "no such file"),
    ("{not json", "not JSON (line 1 column 2"),
    ({"versions": {}}, "comparisons: Field required"),
    ({"comparisons": [{"champion": "a", "challenger": "b", "n": "many", "champion_rmse": 1, "challenger_rmse": 1}]},
     "comparisons.0.n: Input should be a valid integer"),
    ({"comparisons": [{"champion": "a", "challenger": "b", "n": -1, "champion_rmse": 1, "challenger_rmse": 1}]},
     "comparisons.0.n: Input should be greater than or equal to 0"),
    ([1, 2], "Input should be a valid dictionary"),
], ids=["missing", "not-json", "no-comparisons", "n-not-a-number", "negative-n", "not-an-object"])
def test_a_report_the_rule_cannot_read_names_the_file_and_the_field(tmp_path, body, problem):
    path = tmp_path / "report.json"
    if body is not None:
        write(path, body)
    with pytest.raises(BadInput) as exc:
        shadow_evidence.read_report(path)
    assert str(exc.value).startswith(f"--shadow-evidence {path}: ") and problem in str(exc.value), str(exc.value)


FLAG_CASES = [
    ("retrain-zero-rides", ["retrain", "--month", "2031-01", "--require-shadow-evidence", "0"],
     "--require-shadow-evidence"),
    ("retrain-text-rides", ["retrain", "--month", "2031-01", "--require-shadow-evidence", "many"],
     "--require-shadow-evidence"),
    ("retrain-missing-report", ["retrain", "--month", "2031-01", "--require-shadow-evidence", "10",
                                "--shadow-evidence", "{tmp}/missing.json"], "{tmp}/missing.json: no such file"),
    ("retrain-malformed-report", ["retrain", "--month", "2031-01", "--require-shadow-evidence", "10",
                                  "--shadow-evidence", "{tmp}/bad.json"], "{tmp}/bad.json: not an evaluate report"),
    ("retrain-report-without-n", ["retrain", "--month", "2031-01", "--shadow-evidence", "{tmp}/good.json"],
     "needs --require-shadow-evidence N"),
    ("promote-zero-rides", ["promote", "--from", "accept", "--to", "prod", "--require-shadow-evidence", "-3"],
     "--require-shadow-evidence"),
    ("promote-not-json", ["promote", "--from", "accept", "--to", "prod", "--require-shadow-evidence", "10",
                          "--shadow-evidence", "{tmp}/text.json"], "{tmp}/text.json: not JSON"),
    ("promote-report-without-n", ["promote", "--from", "accept", "--to", "prod", "--shadow-evidence",
                                  "{tmp}/good.json"], "needs --require-shadow-evidence N"),
]


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_a_bad_flag_or_report_is_one_line_and_exit_2_before_the_registry(argv, names, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never asked: the inputs fail first
    monkeypatch.setenv("TLC_DATA_DIR", str(tmp_path / "no-months"))
    write(tmp_path / "bad.json", {"comparisons": [{"champion": "a-v1"}]})
    write(tmp_path / "text.json", "rides,rmse\n")
    write(tmp_path / "good.json", report(comparison("a-v1", "a-v2", 10, 7.0, 6.0)))
    code, out, err = run_in_process("jobs", [a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == ExitCode.BAD_INPUT, (out, err)
    assert_one_clean_line(out, err, names.replace("{tmp}", str(tmp_path)))


# ---- against a real registry --------------------------------------------------------------------

@pytest.fixture(scope="module")
def months(tmp_path_factory) -> Path:
    """2030: the old world; 2031: other zones and slower traffic. Small: the gate needs only a clear winner."""
    return two_worlds(tmp_path_factory.mktemp("tlc"), n=1500, seed=11)


def client_for(url: str) -> t.Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def at(client: t.Any, alias: str) -> str:
    return str(client.get_model_version_by_alias(NAME, alias).version)


def tags(client: t.Any, version: str) -> dict[str, str]:
    return dict(client.get_model_version(NAME, version).tags)


def summary_lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def evidence_logs(out: str) -> list[dict[str, t.Any]]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == "shadow_evidence"]


@pytest.mark.slow
def test_retrain_promotes_a_challenger_only_on_better_live_evidence(mlflow_server, months, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("TLC_DATA_DIR", str(months))
    monkeypatch.setenv("TLC_DOWNLOAD", "false")
    client = client_for(mlflow_server.url)
    retrain = ["retrain", "--month", "2031-01", "--model-name", NAME, "--sample-rows", "300",
               "--require-shadow-evidence", "100"]
    with untraced():  # the champion, set up by the training job (tests/jobs/test_retrain.py covers it)
        assert train.main(["--train-data", "2030-01", "--valid-data", "2030-02", "--data-dir", str(months),
                           "--register", "--no-bundle", "--model-name", NAME]) == ExitCode.OK
    capsys.readouterr()

    # 1. no challenger yet: nothing is promoted; the new candidate (better offline) becomes @challenger
    assert main(retrain) == ExitCode.KEPT_CHAMPION
    out = capsys.readouterr().out
    assert summary_lines(out, "retrain:") == [
        "retrain: kept champion on live evidence; the new challenger is @challenger now "
        "(trained on 2031-01, validated on 2031-02)"]
    assert "no @challenger version yet" in evidence_logs(out)[0]["reason"]
    assert (at(client, "production"), at(client, "challenger")) == ("1", "2")

    # 2. evidence the rule refuses: too few rides; a champion that is not the current @production.
    #    (the same decision retrain makes, without training a candidate each time)
    for body, why in ((report(comparison(f"{NAME}-v1", f"{NAME}-v2", 99, 7.0, 5.0)), "99 rides compared"),
                      (report(comparison(f"{NAME}-v7", f"{NAME}-v2", 900, 7.0, 5.0)), f"only with {NAME}-v7")):
        path = write(tmp_path / "report.json", body)
        code = shadow_evidence.decide_challenger(client, NAME, "challenger", "production",
                                                 shadow_evidence.read_report(path), str(path), 100)
        assert code == ExitCode.KEPT_CHAMPION
        assert why in tags(client, "2")["shadow_evidence.reason"]
        assert (at(client, "production"), at(client, "challenger")) == ("1", "2")
    assert tags(client, "2")["shadow_evidence.n"] == ""  # no comparison of v2 with v1: no number left from before
    assert len(summary_lines(capsys.readouterr().out, "gate: kept champion")) == 2

    # 3. v2 is worse than v1 on the same live rides: kept (v3, the same fit, is the next challenger)
    worse = write(tmp_path / "worse.json", report(comparison(f"{NAME}-v1", f"{NAME}-v2", 400, 7.0, 7.5)))
    assert main([*retrain, "--shadow-evidence", str(worse)]) == ExitCode.KEPT_CHAMPION
    out = capsys.readouterr().out
    assert summary_lines(out, "gate: kept champion")[0] == (
        f"gate: kept champion; {NAME} v2 not promoted to @production: live RMSE of {NAME}-v2 7.5000 is not lower "
        f"than {NAME}-v1 7.0000 on the same 400 rides")
    v2 = tags(client, "2")
    assert (v2["shadow_evidence.decision"], v2["shadow_evidence.n"], v2["shadow_evidence.challenger_rmse"],
            v2["shadow_evidence.report"]) == ("keep", "400", "7.5", str(worse))
    assert [r["decision"] for r in evidence_logs(out)] == ["keep"] and evidence_logs(out)[0]["n"] == 400
    assert (at(client, "production"), at(client, "challenger")) == ("1", "3")

    # 4. v3 is better on enough live rides: promoted; the new candidate (the same fit) is not lower than
    #    v3 offline, so the gate rejects it and @challenger stays where it is
    better = write(tmp_path / "better.json", report(comparison(f"{NAME}-v1", f"{NAME}-v3", 100, 7.0, 6.0)))
    assert main([*retrain, "--shadow-evidence", str(better)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert summary_lines(out, "retrain:") == [
        "retrain: promoted on live evidence; the new challenger rejected by the gate "
        "(trained on 2031-01, validated on 2031-02)"]
    assert at(client, "production") == "3"
    v3 = tags(client, "3")
    assert (v3["shadow_evidence.decision"], v3["shadow_evidence.n"], v3["gate"], v3["previous_production"]) == (
        "promote", "100", "promoted", "1")
    assert v3["gate_reason"].startswith(f"on live evidence: live RMSE of {NAME}-v3 6.0000 < {NAME}-v1 7.0000")
    assert tags(client, "4")["gate"] == "rejected"

    # 5. promote between environments asks the same of its candidate, before loading any model
    client.set_registered_model_alias(NAME, "accept", "2")
    code = main(["promote", "--from", "accept", "--to", "prod", "--model-name", NAME,
                 "--require-shadow-evidence", "100", "--shadow-evidence", str(better)])
    out = capsys.readouterr().out
    assert code == ExitCode.KEPT_CHAMPION, out
    assert f"no comparison of {NAME}-v2 against the current @production {NAME}-v3" in tags(client, "2")[
        "shadow_evidence.reason"]
    assert at(client, "production") == "3"
