"""Per-column drift with Evidently: which test, its score, its threshold, and whether it fired.

Evidently picks the test per column type and sample size (its defaults, kept on purpose):
with more than 1,000 reference rows, **Jensen-Shannon distance** for the categorical zones and
**Wasserstein distance normed by the reference's standard deviation** for the numerical
``trip_distance`` and prediction, both with threshold 0.1 (drift when the distance is >= 0.1);
on 1,000 rows or fewer, chi-square (zones) and two-sample Kolmogorov-Smirnov (numbers) p-values
with threshold 0.05 (drift when p < 0.05). The test that ran is recorded in the report, so a
reader never has to guess. A month compared with itself scores 0 on the distances.

Evidently 0.7.23 imports ``pandas.core.dtypes.common.infer_dtype_from_object`` at start-up,
which pandas 3 removed; only its legacy ``TestColumnsType`` calls it, which this job never
runs. :func:`import_evidently` supplies a stand-in that raises if it is ever called.
"""

from __future__ import annotations

import time
import typing as t

if t.TYPE_CHECKING:
    import pandas as pd

CATEGORICAL = ("PULocationID", "DOLocationID")
NUMERICAL = ("trip_distance",)
PREDICTION = "prediction"


def import_evidently() -> t.Any:
    """``import evidently`` under pandas 3 (see the module docstring)."""
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        def infer_dtype_from_object(dtype: t.Any) -> t.NoReturn:
            raise NotImplementedError("removed in pandas 3; evidently's legacy TestColumnsType is not supported")

        common.infer_dtype_from_object = infer_dtype_from_object  # type: ignore[attr-defined]
    import evidently

    return evidently


def column_drift(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[dict[str, dict[str, t.Any]], t.Any]:
    """Drift per column of :data:`CATEGORICAL`, :data:`NUMERICAL` and :data:`PREDICTION`.

    :return: ``{column: {method, score, threshold, drift}}`` and Evidently's snapshot (for its HTML).
    """
    evidently = import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = [*CATEGORICAL, *NUMERICAL, PREDICTION]
    definition = DataDefinition(numerical_columns=[*NUMERICAL, PREDICTION], categorical_columns=list(CATEGORICAL))
    datasets = [Dataset.from_pandas(frame[columns].reset_index(drop=True), data_definition=definition)
                for frame in (current, reference)]
    report = Report([ValueDrift(column=column) for column in columns], include_tests=True)
    started = time.perf_counter()
    snapshot = report.run(*datasets)
    seconds = time.perf_counter() - started
    results: dict[str, dict[str, t.Any]] = {}
    body = snapshot.dict()
    failed = {test["metric_config"]["params"]["column"] for test in body.get("tests", [])
              if str(test.get("status", "")).upper().endswith("FAIL")}
    for metric in body["metrics"]:
        config = metric["config"]
        column = config["column"]
        results[column] = {"method": config["method"], "score": float(metric["value"]),
                           "threshold": float(config["threshold"]), "drift": column in failed}
    snapshot.runtime = {"seconds": round(seconds, 3), "evidently_version": evidently.__version__}
    return results, snapshot
