"""The registered model's format, shared by training (``promote``) and serving (``registry``).

What goes to MLflow is an sklearn ``Pipeline``: ``FunctionTransformer(rides_to_features,
kw_args={"step": <feature step>})`` → ``DictVectorizer`` → regressor, saved with skops (no
pickle; the types it may hold are :data:`.safe_format.MODEL_TYPES`). The transformer's
``kw_args`` say which feature step the model needs (a pipeline without them is the
course's); the model version's ``feature_step`` tag repeats it for people. MLflow's pyfunc and
``mlflow models serve`` call it with a frame of raw ride columns; the service reads the same
file against its own allow-list, takes the last two steps and compiles its usual fast path,
so both give the same numbers for the same weights.

Nothing here imports mlflow or pandas at module level: serving needs only mlflow-skinny.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from ..features import COURSE_STEP, RAW_COLUMNS, FeatureStep, FeatureStepError, rides_to_features
from ..model.predictor import ModelCheckError

MODEL_ARTIFACT = "model"
"""Name of the logged model inside a run (``runs:/<run_id>/model``)."""
MODEL_FILE = "model.skops"
"""The model file inside a logged model (MLflow's name for ``serialization_format="skops"``)."""
SHA256_TAG = "model_sha256"
"""Model-version tag: sha256 of the model file, checked (and signed) before it is read when serving."""
FEATURE_STEP_TAG = "feature_step"
"""Model-version tag: the feature step's JSON (``{"name": "flagged-v2", "max_miles": 30.0}``)."""
GATE_TAG = "gate"
GATE_REASON_TAG = "gate_reason"
FEATURES_MODULE = Path(__file__).parent.parent / "features.py"
MONOTONE_MODULE = Path(__file__).parent.parent / "model" / "monotone.py"


def build_pipeline(dv: t.Any, regressor: t.Any, step: FeatureStep = COURSE_STEP) -> t.Any:
    """The servable model: raw rides (frame or list of dicts) in, minutes out.

    :raises ModelCheckError: the vectorizer was fitted on numeric features ``step`` does not make
        (a model trained with one step and logged with another would silently ignore them).
    """
    from sklearn.pipeline import Pipeline

    prefixes = tuple(name + getattr(dv, "separator", "=") for name in step.categorical)
    unknown = [n for n in getattr(dv, "feature_names_", []) if not n.startswith(prefixes) and n not in step.numeric]
    if unknown:
        raise ModelCheckError(f"the vectorizer has features {unknown[:3]} that feature step {step.name} does not "
                              "make; pass the step the model was trained with")
    from sklearn.preprocessing import FunctionTransformer

    features = FunctionTransformer(rides_to_features, kw_args={"step": step.to_dict()})
    return Pipeline([("features", features), ("dv", dv), ("regressor", regressor)])


def pipeline_step(obj: t.Any) -> FeatureStep:
    """The feature step a logged pipeline applies (the course's for a bare pair or no ``kw_args``).

    :raises ModelCheckError: the pipeline names an unknown step or bad parameters.
    """
    steps = getattr(obj, "steps", None)
    if not steps:
        return COURSE_STEP
    kw_args = getattr(steps[0][1], "kw_args", None) or {}
    try:
        return FeatureStep.from_dict(kw_args.get("step"))
    except FeatureStepError as exc:
        raise ModelCheckError(str(exc)) from exc


def split_pipeline(obj: t.Any) -> tuple[t.Any, t.Any]:
    """``(DictVectorizer, regressor)`` from a logged pipeline (or a bare ``(dv, regressor)`` tuple).

    :raises ModelCheckError: the object has another shape.
    """
    if isinstance(obj, tuple) and len(obj) == 2:
        return obj
    steps = getattr(obj, "steps", None)
    if not steps or len(steps) != 3:
        raise ModelCheckError(f"expected a 3-step Pipeline (features, dv, regressor), got {type(obj).__name__}")
    func = getattr(steps[0][1], "func", None)
    if getattr(func, "__module__", None) != "ride_duration.features" or func.__name__ != "rides_to_features":
        raise ModelCheckError("first pipeline step is not ride_duration.features.rides_to_features")
    return steps[1][1], steps[2][1]


def write_code_package(root: Path) -> Path:
    """A minimal ``ride_duration`` package (the feature step and the monotone regressor) for ``code_paths``.

    The real package's ``__init__`` pulls in Flask and pydantic-settings; the logged model
    needs only ``features.py``, so pyfunc and ``mlflow models serve`` work without them.
    """
    package = root / "ride_duration"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Feature step of the ride-duration model (logged with the model)."""\n')
    (package / "features.py").write_text(FEATURES_MODULE.read_text())
    (package / "model").mkdir(exist_ok=True)  # the monotone regressor's class (numpy only)
    (package / "model" / "__init__.py").write_text('"""The monotone regressor (logged with the model)."""\n')
    (package / "model" / "monotone.py").write_text(MONOTONE_MODULE.read_text())
    return package




def example_rides(example: t.Any) -> list[dict[str, t.Any]]:
    """Rides from a logged input example (pandas ``split`` orient, records, or one ride), no pandas.

    :raises ModelCheckError: the example does not carry the raw ride columns.
    """
    if isinstance(example, dict) and "dataframe_split" in example:
        example = example["dataframe_split"]
    if isinstance(example, dict) and "dataframe_records" in example:
        example = example["dataframe_records"]
    if isinstance(example, dict) and "columns" in example and "data" in example:
        try:
            rides = [dict(zip(example["columns"], row, strict=True)) for row in example["data"]]
        except (TypeError, ValueError) as exc:
            raise ModelCheckError(f"input example is malformed: {exc}") from exc
    elif isinstance(example, dict):
        rides = [example]
    elif isinstance(example, list):
        rides = list(example)
    else:
        raise ModelCheckError(f"input example has an unexpected type {type(example).__name__}")
    missing = [c for c in RAW_COLUMNS if not rides or not isinstance(rides[0], dict) or c not in rides[0]]
    if missing:
        raise ModelCheckError(f"input example lacks ride columns {missing}")
    return rides
