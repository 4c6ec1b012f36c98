"""Loading a pickled ``(DictVectorizer, regressor)`` file, integrity first.

Local files are trusted as the image or the operator put them there, but checked: the sha256
is verified *before* unpickling (a pickle can run code): the expected digest comes from
``MODEL_SHA256`` or from ``metadata.json`` beside the file. The bundled default without either
is refused (:func:`load_file`'s ``require_digest``); a file the operator names in
``MODEL_PATH`` loads with a warning. The feature
step the model needs is ``metadata.json``'s ``"feature_step"``; a file without one (the
course's ``lin_reg.bin``) gets the course's step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import typing as t
import warnings
from pathlib import Path

import sklearn

from ..features import FeatureStep, FeatureStepError
from .predictor import LoadedModel, ModelCheckError

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model could not be loaded; the message is safe to show in ``/ready``."""


def sha256_bytes(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def read_metadata(path: Path) -> dict[str, t.Any] | None:
    """``metadata.json`` beside ``path`` if it describes that file, else None."""
    meta_path = path.parent / "metadata.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable {meta_path.name}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("file", path.name) != path.name:
        return None
    return meta


def unpickle_pair(blob: bytes) -> tuple[t.Any, t.Any, list[str]]:
    """Unpickle ``(dv, regressor)``, recording warnings such as a scikit-learn version mismatch."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = pickle.loads(blob)  # noqa: S301 - digest verified by the caller
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not loadable"
            raise ModelLoadError(f"cannot unpickle model: {type(exc).__name__}: {exc}") from exc
    notes = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    if not (isinstance(obj, tuple) and len(obj) == 2):
        raise ModelLoadError("model file must hold a (DictVectorizer, regressor) tuple")
    return obj[0], obj[1], notes


def load_file(path: Path, expected_sha256: str | None = None, source: str = "bundled",
              require_digest: bool = False) -> LoadedModel:
    """Load and check a model file.

    ``require_digest``: refuse a file whose sha256 cannot be checked (no ``expected_sha256``, no
    ``metadata.json`` naming it) instead of unpickling it with a warning; the service sets it for
    the bundled default path, which nobody named explicitly.

    :raises ModelLoadError: missing file, digest mismatch or no digest to check when one is required,
        bad content or failed self-test.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path.name}: {exc.strerror}") from exc
    meta = read_metadata(path) or {}
    digest = sha256_bytes(blob)
    expected = expected_sha256 or meta.get("sha256")
    load_warnings: list[str] = []
    if expected is None and require_digest:
        raise ModelLoadError(
            f"{path.name}: no sha256 to check it against (no MODEL_SHA256, no metadata.json beside it); refusing "
            "to unpickle an unverified bundled file. Set MODEL_SHA256, name the file in MODEL_PATH, or set "
            "ALLOW_PICKLE_MODELS=true (unsafe)")
    if expected is None:
        load_warnings.append("no expected sha256 (MODEL_SHA256 or metadata.json): integrity not verified")
    elif digest != expected.lower():
        raise ModelLoadError(
            f"sha256 mismatch for {path.name}: expected {expected[:12]}…, file has {digest[:12]}…; "
            "refusing to unpickle")
    try:
        step = FeatureStep.from_dict(meta.get("feature_step"))
    except FeatureStepError as exc:
        raise ModelLoadError(f"{path.name}: {exc}") from exc
    dv, regressor, notes = unpickle_pair(blob)
    info = {
        "name": meta.get("name", path.stem),
        "path": str(path),
        "sha256": digest,
        "sha256_verified": expected is not None,
        "sklearn_version": sklearn.__version__,
        "trained_sklearn_version": meta.get("sklearn_version"),
        "warnings": load_warnings + notes,
        "metadata": meta,
    }
    version = meta.get("version") or f"sha256-{digest[:12]}"
    try:
        model = LoadedModel.build(dv, regressor, version=version, source=source, info=info, step=step)
    except ModelCheckError as exc:
        raise ModelLoadError(str(exc)) from exc
    for note in info["warnings"]:
        log.warning("model %s: %s", version, note)
    return model
