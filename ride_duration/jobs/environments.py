"""Dev → Test → Accept → Prod: each environment follows one registry alias; promotion moves a
version from one environment's alias to the next through the champion/challenger gate.

    python -m ride_duration promote --from dev --to test [--valid-data 2021-02]

The candidate is the version ``@<from alias>`` points at; the champion is ``@<to alias>``'s. The
candidate is first loaded exactly as the service loads it (sha256 check, unpickle, golden self-test,
input example: ``registry_fetch.load``), then both are scored on the same validation rides by
``promote.gate``, which moves ``@<to alias>`` only if the candidate's RMSE is strictly lower (or the
alias is not set yet). Environments cannot be skipped: ``--to`` must come right after ``--from``.
A model enters dev from training: ``train.py --register --alias dev``.

Validation rides: ``--valid-data`` (a path, URL or ``YYYY-MM`` like ``train.py``), else the
validation file logged with the candidate's run (``data/valid/`` artifact).

Besides the gate's own ``gate``/``gate_reason`` tags (the last decision), each decision is kept per
environment as ``gate.<alias>`` / ``gate_reason.<alias>`` on the version.

With ``--require-shadow-evidence N --shadow-evidence report.json`` (``evaluate``'s report) the
candidate must also have been shadowed beside the current ``@<to alias>`` version: the report must
compare the two on at least N live rides with a lower live RMSE for the candidate, else the
champion is kept before any model is loaded (:mod:`ride_duration.registry.shadow_evidence`; the
decision and the numbers are tagged on the candidate as ``shadow_evidence.*``).

Exit codes (:class:`ride_duration.errors.ExitCode`): 0 promoted (or already there), 3 kept the
champion (also: the live evidence is missing, too small or not better), 1 error (no
MLFLOW_TRACKING_URI, registry unreachable, nothing to promote), 2 bad input (a skipped environment,
an unreadable or mistyped ``--valid-data``, a missing, unreadable or malformed ``--shadow-evidence``,
a bad flag: read before the registry is asked).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import typing as t
from pathlib import Path

from ..config import Settings
from ..errors import BadInput, ExitCode, JobError
from ..registry import promote, shadow_evidence
from ..registry.aliases import champion_version
from ..registry.mlflow_model import GATE_REASON_TAG, GATE_TAG
from ..registry.summary import summary
from . import cli, live_evidence

if t.TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

ENVIRONMENTS: dict[str, str] = {"dev": "dev", "test": "test", "accept": "accept", "prod": "production"}
"""Environment → the registry alias its deployment follows (charts/ride-duration/values-<env>.yaml)."""
ORDER = list(ENVIRONMENTS)


def next_environment(env: str) -> str | None:
    i = ORDER.index(env)
    return ORDER[i + 1] if i + 1 < len(ORDER) else None


def check_step(source: str, target: str) -> str | None:
    """Why ``source`` → ``target`` is not a promotion step, or None when it is."""
    step = next_environment(source)
    if step == target:
        return None
    if step is None:
        return f"{source} is the last environment; nothing comes after it"
    return f"{target} does not follow {source}: the next environment after {source} is {step} ({' -> '.join(ORDER)})"


def add_parser(commands: t.Any) -> None:
    """Register ``promote`` on a subparsers object; sets ``run``."""
    parser = commands.add_parser("promote", help="move the model of one environment to the next through the gate",
                                 description=(__doc__ or "").split("\n\n")[0],
                                 epilog=(__doc__ or "").split("\n\n")[-1].replace("``", "").replace(
                                     ":class:`ride_duration.errors.ExitCode`", "ExitCode"))
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=ORDER, required=True, help="environment promoted from")
    parser.add_argument("--to", dest="target", choices=ORDER, required=True,
                        help="environment promoted to (must be the next one)")
    parser.add_argument("--valid-data", default=None,
                        help="validation rides (path, URL or YYYY-MM); default: the file logged with the "
                             "candidate's training run")
    cli.data_dir_option(parser)
    parser.add_argument("--model-name", default=None, help="registered model (default MODEL_NAME)")
    live_evidence.add_options(parser, "the --from version")


def logged_validation_file(client: MlflowClient, run_id: str, dst: str) -> Path | None:
    """The validation file the candidate's run logged under ``data/valid/``, downloaded; or None."""
    import mlflow

    files = [f for f in client.list_artifacts(run_id, "data/valid") if not f.is_dir]
    if not files:
        return None
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=files[0].path, dst_path=dst))


def given_validation_rides(args: argparse.Namespace, settings: Settings) -> pd.DataFrame | None:
    """``--valid-data``, read (None without it).

    :raises BadInput: unreadable, a column missing or mistyped, no rides.
    """
    from . import data

    if not args.valid_data:
        return None
    return data.read_rides(data.resolve_source(args.valid_data, cli.data_dir(args, settings)))


def validation_rides(args: argparse.Namespace, client: MlflowClient, run_id: str | None, tmp: str) -> pd.DataFrame:
    from . import data

    if getattr(args, "rides", None) is not None:
        return args.rides
    if args.valid_data:
        return data.read_rides(data.resolve_source(args.valid_data, cli.data_dir(args)))
    logged = logged_validation_file(client, run_id, tmp) if run_id else None
    if logged is None:
        raise LookupError("the candidate's run logged no validation file; pass --valid-data")
    return data.read_rides(str(logged))


def record(client: MlflowClient, name: str, version: str, alias: str) -> None:
    """Copy the gate's last decision into the per-environment tags."""
    tags = client.get_model_version(name, version).tags
    for key in (GATE_TAG, GATE_REASON_TAG):
        if key in tags:
            client.set_model_version_tag(name, version, f"{key}.{alias}", tags[key])


def promote_between(client: MlflowClient, name: str, source: str, target: str,
                    args: argparse.Namespace) -> int:
    """Gate the version at ``@alias(source)`` into ``@alias(target)``; returns the exit code."""
    from ..registry.fetch import CandidateRejected, RegistryUnavailable, load, resolve

    why = check_step(source, target)
    if why:
        summary(f"error: {why}")
        return ExitCode.BAD_INPUT
    src_alias, dst_alias = ENVIRONMENTS[source], ENVIRONMENTS[target]
    try:
        candidate = resolve(client, f"models:/{name}@{src_alias}")
    except RegistryUnavailable as exc:
        summary(f"error: nothing to promote from {source}: {exc}")
        return ExitCode.ERROR
    version = str(candidate.version)
    if champion_version(client, name, dst_alias) == version:
        summary(f"{name} v{version} is already @{dst_alias} ({target}); nothing to do")
        return ExitCode.OK
    if getattr(args, "require_shadow_evidence", None) is not None:  # live evidence first: it needs no model loaded
        evidence = shadow_evidence.check(client, name, version, dst_alias, getattr(args, "evidence", None),
                                         live_evidence.source(args), args.require_shadow_evidence)
        if not evidence.promote:
            return shadow_evidence.keep(name, version, dst_alias, evidence)
    try:
        model = load(client, candidate)
    except CandidateRejected as exc:
        code = promote.reject(client, name, version, f"candidate fails the serving checks: {exc}")
        record(client, name, version, dst_alias)
        return code
    with tempfile.TemporaryDirectory(prefix="ride-duration-promote-") as tmp:
        rides = validation_rides(args, client, candidate.run_id, tmp)
    log.info("gating %s v%s from @%s (%s) into @%s (%s) on %d validation rides",
             name, version, src_alias, source, dst_alias, target, len(rides))
    code = promote.gate(client, name, version, rides, dst_alias, False, model.dv, model.regressor)
    record(client, name, version, dst_alias)
    return code


def run(args: argparse.Namespace) -> int:
    """``python -m ride_duration promote``: one ``gate:`` line, exit 0/3/1/2."""
    why = check_step(args.source, args.target)
    if why:
        summary(f"error: --to {args.target}: {why}")
        return ExitCode.BAD_INPUT
    settings = Settings()
    try:
        args.rides = given_validation_rides(args, settings)  # inputs first: a bad file fails before the registry
    except JobError as exc:
        summary(f"error: --valid-data {args.valid_data}: {exc}")
        return exc.exit_code
    try:
        args.evidence = live_evidence.read(args)
    except BadInput as exc:
        summary(f"error: {exc}")
        return exc.exit_code
    if not settings.mlflow_tracking_uri:
        summary("error: promote needs MLFLOW_TRACKING_URI (the tracking server's URL)")
        return ExitCode.ERROR
    from ..registry.client import bound_http, client_for

    bound_http(timeout=60, max_retries=3)
    client = client_for(settings.mlflow_tracking_uri)
    try:
        return promote_between(client, args.model_name or settings.model_name, args.source, args.target, args)
    except JobError as exc:  # BadInput: the logged validation file; JobError: a download
        summary(f"error: {exc}")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - a CLI: report any failure as one line and exit 1
        log.exception("promotion failed")
        summary(f"error: {type(exc).__name__}: {str(exc)[:500]}")
        return ExitCode.ERROR
