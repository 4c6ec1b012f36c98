"""Promotion on live evidence: ``--require-shadow-evidence N --shadow-evidence report.json``.

``evaluate`` joins the served and shadow predictions with the rides' true durations and writes
``report.json``; its ``comparisons`` hold, per (champion, challenger) pair, the rides both
scored (``n``) and both RMSEs on them. The rule (:func:`judge`): the version to be moved to
``@production`` (the target alias) must appear as ``challenger`` in a comparison whose
``champion`` is the current ``@production`` version's label (``<name>-v<version>``, as the
service and ``evaluate`` write it), with ``n >= N`` and ``challenger_rmse < champion_rmse``.
Anything else (no report, no such comparison, a champion that is not the current one, too few
rides, not better) keeps the champion.

The decision and the numbers are tagged on the version (``shadow_evidence.*``, :func:`record`)
and logged as one JSON line (``"event": "shadow_evidence"``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing as t
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInput, ExitCode
from .aliases import champion_version, move
from .mlflow_model import GATE_REASON_TAG, GATE_TAG
from .summary import summary

if t.TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

TAG_PREFIX = "shadow_evidence."
FLAG = "--shadow-evidence"
NUMBERS = ("n", "champion_rmse", "challenger_rmse", "champion_mae", "challenger_mae")
"""The numbers of a comparison tagged on the version."""


class Comparison(BaseModel):
    """One entry of report.json's ``comparisons``: the same rides scored by both versions."""

    model_config = ConfigDict(extra="ignore")

    champion: str
    challenger: str
    n: int = Field(ge=0, strict=True)
    champion_rmse: float | None
    challenger_rmse: float | None
    champion_mae: float | None = None
    challenger_mae: float | None = None


class Report(BaseModel):
    """What the rule reads from ``evaluate``'s report.json (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    generated_at: str | None = None
    comparisons: list[Comparison]


def read_report(path: Path) -> Report:
    """``evaluate``'s report.json.

    :raises BadInput: missing, unreadable, not JSON, or without the fields the rule needs (the
        message names the flag, the file and the field).
    """
    where = f"{FLAG} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{where}: cannot read it: {exc}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    try:
        return Report.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "the document"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise BadInput(f"{where}: not an evaluate report: {field}: {error['msg']}{more}") from None


def label(name: str, version: str) -> str:
    """A registered version's label as the service logs it and ``evaluate`` reports it."""
    from .fetch import Target

    return Target(uri=f"models:/{name}/{version}", artifact_uri="", name=name, version=str(version)).label


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the rule decided for one version, and why."""

    promote: bool
    reason: str
    challenger: str
    champion: str | None
    required: int
    report: str | None
    generated_at: str | None = None
    comparison: Comparison | None = None

    def tags(self) -> dict[str, str]:
        """The ``shadow_evidence.*`` tags; the numbers are empty when the report did not compare the
        pair (so no number of an earlier decision is left beside this one's reason)."""
        values: dict[str, t.Any] = {"decision": "promote" if self.promote else "keep", "reason": self.reason,
                                    "required_n": self.required, "challenger": self.challenger,
                                    "champion": self.champion, "report": self.report,
                                    "generated_at": self.generated_at}
        values |= {key: getattr(self.comparison, key, None) for key in NUMBERS}
        return {TAG_PREFIX + key: ("" if value is None else str(value))[:5000] for key, value in values.items()}


def judge(report: Report | None, source: str | None, challenger: str, champion: str | None,
          required: int, alias: str = "production") -> Evidence:
    """The rule (module docstring) for the version labelled ``challenger`` against the current
    ``@alias`` version labelled ``champion`` (None: the alias is not set)."""
    def decide(promote: bool, reason: str, comparison: Comparison | None = None) -> Evidence:
        return Evidence(promote, reason, challenger, champion, required, source,
                        report.generated_at if report else None, comparison)

    if report is None:
        return decide(False, f"no live evidence for {challenger}: no {FLAG} report given")
    if champion is None:
        return decide(False, f"no @{alias} version to compare {challenger} with on live rides")
    found = [c for c in report.comparisons if c.challenger == challenger and c.champion == champion]
    if not found:
        others = sorted({c.champion for c in report.comparisons if c.challenger == challenger})
        seen = f"; it compares {challenger} only with {', '.join(others)}" if others else ""
        return decide(False, f"no live evidence: the report has no comparison of {challenger} against the "
                             f"current @{alias} {champion}{seen}")
    comparison = max(found, key=lambda c: c.n)
    n, cand, champ = comparison.n, comparison.challenger_rmse, comparison.champion_rmse
    if n < required:
        return decide(False, f"too little live evidence: {n} rides compared {challenger} with {champion}, "
                             f"fewer than the {required} required", comparison)
    if cand is None or champ is None or not (math.isfinite(cand) and math.isfinite(champ)):
        return decide(False, f"the report gives no finite live RMSE for {challenger} and {champion}", comparison)
    if not cand < champ:
        return decide(False, f"live RMSE of {challenger} {cand:.4f} is not lower than {champion} {champ:.4f} "
                             f"on the same {n} rides", comparison)
    return decide(True, f"live RMSE of {challenger} {cand:.4f} < {champion} {champ:.4f} on the same {n} rides "
                        f"(at least {required} required)", comparison)


def check(client: MlflowClient, name: str, version: str, alias: str, report: Report | None,
          source: str | None, required: int) -> Evidence:
    """Judge registered ``version`` against the current ``@alias`` version, tag and log the result."""
    current = champion_version(client, name, alias)
    evidence = judge(report, source, label(name, version), label(name, current) if current else None,
                     required, alias)
    record(client, name, version, evidence)
    return evidence


def record(client: MlflowClient, name: str, version: str, evidence: Evidence) -> None:
    """Tag the decision and the numbers on the version, and log them as one JSON line."""
    for key, value in evidence.tags().items():
        client.set_model_version_tag(name, version, key, value)
    numbers = evidence.comparison.model_dump() if evidence.comparison else {}
    log.info("shadow evidence for %s v%s: %s: %s", name, version, "promote" if evidence.promote else "keep",
             evidence.reason, extra={"event": "shadow_evidence", "decision": "promote" if evidence.promote else "keep",
                                     "reason": evidence.reason, "model_version": evidence.challenger,
                                     "champion": evidence.champion, "required_n": evidence.required,
                                     "report": evidence.report, **{k: v for k, v in numbers.items()
                                                                   if k not in ("champion", "challenger")}})


def keep(name: str, version: str, alias: str, evidence: Evidence) -> int:
    """Say why ``version`` is not promoted to ``@alias``; the exit code for "kept the champion"."""
    summary(f"kept champion; {name} v{version} not promoted to @{alias}: {evidence.reason}")
    return ExitCode.KEPT_CHAMPION


def promote_on_evidence(client: MlflowClient, name: str, version: str, alias: str, evidence: Evidence) -> int:
    """Move ``@alias`` to ``version`` if the evidence says so (exit 0), else keep the champion (exit 3)."""
    if not evidence.promote:
        return keep(name, version, alias, evidence)
    previous = champion_version(client, name, alias)
    move(client, name, version, alias, legacy_stage=False)
    if previous is not None:
        client.set_model_version_tag(name, version, "previous_" + alias, previous)
    reason = f"on live evidence: {evidence.reason}"
    client.set_model_version_tag(name, version, GATE_TAG, "promoted")
    client.set_model_version_tag(name, version, GATE_REASON_TAG, reason)
    summary(f"promoted {name} v{version} to @{alias} {reason}")
    return ExitCode.OK


def decide_challenger(client: MlflowClient, name: str, challenger_alias: str, alias: str, report: Report | None,
                      source: str | None, required: int) -> int:
    """``retrain``'s live decision: promote the current ``@challenger_alias`` version to ``@alias``
    on the report's evidence (exit 0), or keep the champion (exit 3; also when there is no
    challenger other than the champion)."""
    challenger = champion_version(client, name, challenger_alias)
    if challenger is None or challenger == champion_version(client, name, alias):
        why = (f"no @{challenger_alias} version yet" if challenger is None else
               f"@{challenger_alias} is the @{alias} version v{challenger}")
        log.info("shadow evidence: nothing to decide: %s", why,
                 extra={"event": "shadow_evidence", "decision": "keep", "reason": why, "report": source})
        summary(f"kept champion; no challenger to promote on live evidence: {why}")
        return ExitCode.KEPT_CHAMPION
    evidence = check(client, name, challenger, alias, report, source, required)
    return promote_on_evidence(client, name, challenger, alias, evidence)
