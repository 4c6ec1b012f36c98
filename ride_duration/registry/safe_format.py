"""The registered model's file format: skops, read against the service's own allow-list.

A registered version's ``model.skops`` is a zip of a JSON schema and ``.npy`` arrays: reading
it constructs only the types that schema names, and numpy arrays are read with
``allow_pickle=False``. Before skops constructs anything, every type the schema names must be
in :data:`MODEL_TYPES` (the project's estimators and the feature step) or
:data:`DATA_TYPES` (containers, primitives, numpy arrays and scalars); the list in the
file's own ``MLmodel`` (``skops_trusted_types``) is never used, since whoever writes the
artifact writes that too.

:data:`MODEL_TYPES` is the one list to extend when the model gains a step (a new
estimator, a project-defined transformer): training logs with it (``skops_trusted_types``,
which ``mlflow models serve`` and ``spark_udf`` read) and the service loads with it.
"""

from __future__ import annotations

import io
import json
import typing as t
import zipfile

MODEL_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "ride_duration.features.rides_to_features",
    "sklearn.feature_extraction._dict_vectorizer.DictVectorizer",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "ride_duration.model.monotone.MonotoneDuration",
)
"""Estimators, transformers and functions a registered model may contain (``module.qualname``).
Extend this tuple, and only this, when the model changes shape."""

DATA_TYPES: frozenset[str] = frozenset(
    [f"builtins.{n}" for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool",
                               "complex", "bytes", "NoneType", "slice")]
    + [f"numpy.{n}" for n in ("ndarray", "dtype", "bool_", "str_", "float16", "float32", "float64",
                              "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")]
    + [f"numpy.dtypes.{n}DType" for n in ("Float32", "Float64", "Int32", "Int64", "Bool", "Str", "Object")]
)
"""Plain data skops may rebuild inside a model (no behaviour of their own)."""

SCHEMA = "schema.json"


class UnsafeArtifact(Exception):
    """The file is not a skops model, or names a type outside the allow-list; nothing was constructed."""


def types_in(blob: bytes) -> set[str]:
    """Every ``module.class`` the skops schema in ``blob`` would construct (JSON parsing only).

    :raises UnsafeArtifact: not a skops zip, or no readable schema.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            schema = json.loads(archive.read(SCHEMA))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UnsafeArtifact(f"not a skops file: {type(exc).__name__}: {str(exc)[:120]}") from exc
    found: set[str] = set()
    stack: list[t.Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__')}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def untrusted(blob: bytes, trusted: t.Iterable[str] = MODEL_TYPES) -> list[str]:
    """The types in ``blob`` outside the allow-list (sorted; empty: safe to load)."""
    allowed = DATA_TYPES | set(trusted)
    return sorted(types_in(blob) - allowed)


def loads(blob: bytes, trusted: t.Sequence[str] = MODEL_TYPES) -> t.Any:
    """The model in ``blob``, constructed only from allowed types.

    Under gevent the work runs in a real OS thread (:func:`off_loop`): importing skops (it walks
    every scikit-learn module, 1-3 s) and rebuilding a 13k-feature vectorizer (~0.5 s) would
    otherwise stall every request of the worker for that long.

    :raises UnsafeArtifact: a type outside the allow-list (checked before anything is built), or
        skops' own audit refused one.
    """
    bad = untrusted(blob, trusted)
    if bad:
        raise UnsafeArtifact(f"skops file names types outside the allow-list: {', '.join(bad[:5])}"
                             f"{' …' if len(bad) > 5 else ''}")
    return off_loop(_build, blob, list(trusted))


def _build(blob: bytes, trusted: list[str]) -> t.Any:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.loads(blob, trusted=trusted)
    except UntrustedTypesFoundException as exc:
        raise UnsafeArtifact(f"skops refused the file: {str(exc)[:200]}") from exc


def preload() -> None:
    """Import skops now (a gunicorn master before it forks), so no worker pays for it mid-traffic."""
    import skops.io  # noqa: F401


def off_loop(fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
    """``fn(*args)``, in gevent's thread pool when gevent has patched threading (a gevent worker), so
    the worker's event loop keeps answering while it runs; a plain call otherwise. ``fn`` must do
    no I/O through patched sockets (CPU and imports only)."""
    try:
        from gevent import monkey
    except ImportError:
        return fn(*args)
    if not monkey.is_module_patched("threading"):
        return fn(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args)
