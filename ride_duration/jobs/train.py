"""Train the ride-duration model on NYC TLC green-taxi data.

    python train.py --train-data 2021-01 --valid-data 2021-02 --output-dir model/

Writes ``lin_reg.bin`` (a pickle of ``(DictVectorizer, linear regressor)``, the
course's format) and ``metadata.json`` (sha256, versions, data, validation RMSE, and the
``feature_step`` the model needs). The default is the ``flagged-v2`` step with ridge
regression (docs/model.md); ``--feature-step course-v1 --alpha 0`` is the course's model.
With ``--gate-against model/`` the bundle is written only if the new model beats that
bundled champion on the same validation rides (the registry gate's scoring, run locally).
With ``--register`` it also logs the run to MLflow, registers the model and moves
the production alias through the champion/challenger gate (see ``--help``).
Never imported by the service. ``train.py`` at the top of the repository runs :func:`main`.

It fails like every job (:mod:`ride_duration.jobs.cli`): JSON log lines on stdout; exit 2 with one
line naming the file, column or flag for an input it cannot use (a missing, corrupt or mistyped
file, an HTTP error for a URL, ``--alpha -1``); exit 1 for a URL that cannot be reached, a
``--gate-against`` champion that cannot be loaded or a registry failure; 3 kept the champion.
No traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import pickle
import sys
import typing as t
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import root_mean_squared_error

from ..errors import BadInput, ExitCode, JobError
from ..features import (
    DEFAULT_MAX_MILES,
    FITTED_STEP_ATTRIBUTE,
    FLAGGED,
    MONOTONE,
    STEPS,
    FeatureStep,
    fitted_step,
    frame_to_rides,
    prepare_features,
)
from . import cli, data

log = logging.getLogger("train")

LSQR_TOL = 1e-8
"""scikit-learn >= 1.7 stops sparse lsqr at ``tol=1e-6`` (validation RMSE 7.76 here);
``1e-8`` reproduces the course's scikit-learn 1.0.2 fit (7.4795 vs its 7.4796). Fully
converged (``1e-12``) fits the training month tighter and validates worse (7.4808)."""
DEFAULT_STEP = FeatureStep(MONOTONE)
DEFAULT_ALPHA = 1.0
"""Ridge penalty of the default model; 0 means the course's ``LinearRegression`` (lsqr, tol 1e-8)."""
RIDGE_TOL = 1e-6


def make_regressor(alpha: float) -> LinearRegression | Ridge:
    """``Ridge(alpha)`` (sparse conjugate gradients), or the course's lsqr fit when ``alpha`` is 0."""
    if alpha == 0:
        return LinearRegression(tol=LSQR_TOL)
    return Ridge(alpha=alpha, solver="sparse_cg", tol=RIDGE_TOL)


def model_params(step: FeatureStep, alpha: float) -> dict:
    """What ``metadata.json`` and the MLflow run record about the fit."""
    if step.name == MONOTONE:
        from ..model.monotone import MonotoneDuration

        params = MonotoneDuration().get_params()
        params.pop("feature_names")
        return {"model": "MonotoneDuration", **{k: str(v) if isinstance(v, tuple) else v for k, v in params.items()},
                "feature_step": step.name, "max_miles": step.max_miles}
    regressor = {"model": "LinearRegression", "tol": LSQR_TOL} if alpha == 0 else {
        "model": "Ridge", "alpha": alpha, "solver": "sparse_cg", "tol": RIDGE_TOL}
    return {**regressor, "feature_step": step.name, **({"max_miles": step.max_miles} if step.max_miles else {})}


def fit(train_rides, valid_rides, step: FeatureStep = DEFAULT_STEP,
        alpha: float = DEFAULT_ALPHA) -> tuple[DictVectorizer, LinearRegression | Ridge, float]:
    """Fit the vectorizer and the regression; return them with the validation RMSE."""
    dv = DictVectorizer()
    x_train = dv.fit_transform(prepare_features(frame_to_rides(train_rides), step))
    x_valid = dv.transform(prepare_features(frame_to_rides(valid_rides), step))
    setattr(dv, FITTED_STEP_ATTRIBUTE, step.to_dict())  # so write_bundle / register record the right step
    if step.name == MONOTONE:
        from ..model.monotone import MonotoneDuration

        lr = MonotoneDuration(dv.feature_names_, max_miles=step.max_miles)
    else:
        lr = make_regressor(alpha)
    lr.fit(x_train, train_rides["duration"].to_numpy())
    rmse = float(root_mean_squared_error(valid_rides["duration"].to_numpy(), lr.predict(x_valid)))
    return dv, lr, rmse


def write_bundle(output_dir: Path, dv, lr, info: dict) -> dict:
    """Write ``lin_reg.bin`` and ``metadata.json``; return the metadata."""
    output_dir.mkdir(parents=True, exist_ok=True)
    blob = pickle.dumps((dv, lr), protocol=5)
    sha256 = hashlib.sha256(blob).hexdigest()
    (output_dir / "lin_reg.bin").write_bytes(blob)
    step = fitted_step(dv, info.get("feature_step"))
    metadata = {
        "name": "nyc-taxi-ride-duration",
        "version": f"lin_reg-{sha256[:12]}",
        "file": "lin_reg.bin",
        "sha256": sha256,
        "format": f"pickle of (DictVectorizer, {type(lr).__name__})",
        "features": [*step.categorical, *step.numeric],
        "n_features": len(dv.feature_names_),
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        **info,
        "feature_step": step.to_dict(),
    }
    (output_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def describe_source(source: str, rows: int) -> dict:
    """Provenance of a data file: its name, where it came from, rows kept, and its sha256 when local."""
    info = {"file": source.rsplit("/", 1)[-1], "source": source, "rows": rows}
    if Path(source).is_file():
        info["sha256"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-data", default="2021-01",
                   help="training parquet: path, URL, or YYYY-MM for the TLC public file (default 2021-01)")
    p.add_argument("--valid-data", default="2021-02",
                   help="validation parquet: path, URL, or YYYY-MM (default 2021-02)")
    cli.data_dir_option(p)
    p.add_argument("--output-dir", type=Path, default=Path("model"),
                   help="where lin_reg.bin and metadata.json go (default model/)")
    p.add_argument("--no-bundle", action="store_true", help="do not write the bundle files")
    p.add_argument("--feature-step", choices=STEPS, default=DEFAULT_STEP.name,
                   help=f"feature step the model is trained with and needs (default {DEFAULT_STEP.name})")
    p.add_argument("--max-miles", type=cli.positive_float, default=DEFAULT_MAX_MILES,
                   help=f"{FLAGGED}: distances above this are implausible (default {DEFAULT_MAX_MILES:g})")
    p.add_argument("--alpha", type=cli.non_negative_float, default=DEFAULT_ALPHA,
                   help=f"ridge penalty; 0 = the course's LinearRegression (default {DEFAULT_ALPHA:g})")
    p.add_argument("--gate-against", type=Path, default=None, metavar="BUNDLE",
                   help="a bundled champion (lin_reg.bin or its folder, e.g. model/): write the bundle only if "
                        "the new model's validation RMSE is lower on the same rides (exit 3 otherwise)")
    p.add_argument("--register", action="store_true",
                   help="log to MLflow (MLFLOW_TRACKING_URI), register, and promote if better than production")
    p.add_argument("--model-name", default=None,
                   help="registered model name (default: MODEL_NAME or nyc-taxi-ride-duration)")
    p.add_argument("--alias", default="production", help="alias the gate moves (default production)")
    p.add_argument("--legacy-stage", action="store_true",
                   help="also transition the promoted version to the legacy 'Production' stage")
    p.add_argument("--experiment", default="nyc-taxi-ride-duration", help="MLflow experiment name")
    cli.add_debug(p, top=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python train.py``: the exit code (module docstring), through the jobs' one error path."""
    args = parse_args(argv)
    return cli.execute(run, args, "train")


def run(args: argparse.Namespace) -> int:
    data_dir = cli.data_dir(args)
    if args.gate_against is not None and not args.gate_against.exists():
        raise BadInput(f"--gate-against {args.gate_against}: no such file or folder")
    train_src = data.resolve_source(args.train_data, data_dir)
    valid_src = data.resolve_source(args.valid_data, data_dir)
    log.info("reading %s and %s", train_src, valid_src, extra={"event": "train_reading"})
    train_rides, valid_rides = read(train_src, "--train-data"), read(valid_src, "--valid-data")
    step = FeatureStep(args.feature_step, args.max_miles if args.feature_step == FLAGGED else None)
    dv, lr, rmse = fit(train_rides, valid_rides, step, args.alpha)
    info = {
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "train_data": describe_source(train_src, len(train_rides)),
        "valid_data": describe_source(valid_src, len(valid_rides)),
        "metrics": {"valid_rmse": rmse},
        "params": model_params(step, args.alpha),
        "feature_step": step.to_dict(),
    }
    from ..registry import gate

    info["metrics"] = gate.metrics(lr.predict(dv.transform(prepare_features(
        frame_to_rides(valid_rides), step))), valid_rides)
    info["plausibility"] = gate.plausibility_counts(train_rides, valid_rides)
    if hasattr(lr, "summary"):
        info["fit"] = lr.summary()
    log.info("validation RMSE %.4f on %d rides (1-60 min), %.4f on the %d plausible ones", rmse,
             len(valid_rides), info["metrics"]["valid_rmse_plausible"], info["plausibility"]["valid_plausible"],
             extra={"event": "train_validated", "valid_rmse": rmse, "valid_rows": len(valid_rides),
                    "valid_rmse_plausible": info["metrics"]["valid_rmse_plausible"]})
    if args.gate_against is not None:
        from ..model.loading import ModelLoadError
        from ..registry.bundle_gate import gate_bundle

        try:
            code, gate_info = gate_bundle(args.gate_against, dv, lr, step, valid_rides)
        except ModelLoadError as exc:
            raise JobError(f"cannot load --gate-against {args.gate_against}: {exc}") from None
        info["gate"] = gate_info
        if "champion_rmse" in gate_info:
            info["metrics"]["champion_valid_rmse"] = gate_info["champion_rmse"]
            info["metrics"]["champion_valid_rmse_plausible"] = gate_info["champion_rmse_plausible"]
        if code != ExitCode.OK:
            return code
    if not args.no_bundle:
        try:
            meta = write_bundle(args.output_dir, dv, lr, info)
        except OSError as exc:
            raise BadInput(f"cannot write the bundle into --output-dir {args.output_dir}: {exc}") from None
        log.info("wrote %s/lin_reg.bin version %s", args.output_dir, meta["version"],
                 extra={"event": "train_bundle_written", "model_version": meta["version"]})
    if not args.register:
        return ExitCode.OK
    from ..registry import promote

    return promote.register_and_gate(args, dv, lr, info, valid_rides)


def read(source: str, flag: str) -> t.Any:
    """The cleaned rides of ``source``; an input problem's message names the flag it came from.

    :raises BadInput: see :func:`ride_duration.jobs.data.read_rides`.
    """
    try:
        return data.read_rides(source)
    except BadInput as exc:
        raise BadInput(f"{flag}: {exc}") from None
