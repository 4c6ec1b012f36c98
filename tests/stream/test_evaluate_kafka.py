"""``evaluate`` reading the stream's predictions topic and its shadow sink from a real broker (tansu).

Records made by the consumer's own functions (``records.prediction`` and ``records.shadow_record``: served
``{"ride_id", "duration", "model_version"}``, shadow ``"role": "shadow"`` with ``served_duration`` and
``served_model_version``), a redelivered duplicate and a message that is not JSON; the expected numbers
are computed here with numpy.
"""

from __future__ import annotations

import json
import typing as t

import numpy as np
import pandas as pd
import pytest

from ride_duration.__main__ import main
from ride_duration.errors import ExitCode
from ride_duration.stream import records
from tests.stream.broker import Tansu

V1, V2 = "nyc-taxi-ride-duration-v1", "nyc-taxi-ride-duration-v2"
ACTUAL = {"r0": 11.0, "r1": 19.0, "r2": 16.5, "r3": 24.0, "r4": 7.0}
SERVED = {"r0": 10.0, "r1": 20.0, "r2": 15.0, "r3": 22.0, "r4": 9.0, "r5": 30.0}   # r5: no actual yet
SHADOW = {"r0": 12.0, "r1": 18.0, "r2": 14.0, "r3": 25.0}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Tansu]:
    with Tansu(tmp_path_factory.mktemp("tansu-evaluate")) as server:
        server.create_topics({"predictions": 2, "shadow": 1})
        served = [*SERVED, "r1"]  # r1 redelivered after a consumer restart (at-least-once)
        server.produce("predictions", [records.prediction(r, SERVED[r], V1) for r in served] + [b"not json"],
                       keys=[r.encode() for r in served] + [b"x"])
        server.produce("shadow", [records.shadow_record(r, d, V2, SERVED[r], V1) for r, d in SHADOW.items()])
        yield server


def rmse(predicted: dict[str, float]) -> float:
    error = np.array([predicted[r] - ACTUAL[r] for r in predicted if r in ACTUAL])
    return float(np.sqrt(np.mean(error**2)))


def test_evaluate_reads_both_topics_to_their_end(broker, tmp_path):
    actuals = tmp_path / "actuals.parquet"
    pd.DataFrame({"ride_id": list(ACTUAL), "actual_duration": list(ACTUAL.values()),
                  "trip_distance": 3.0}).to_parquet(actuals, index=False)
    out = tmp_path / "report"

    code = main(["evaluate", "--predictions", broker.url("predictions"), "--predictions", broker.url("shadow"),
                 "--actuals", str(actuals), "--report-dir", str(out), "--kafka-timeout", "20"])

    assert code == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    assert [s["messages"] for s in report["sources"]] == [8, 4]
    assert report["sources"][0]["unreadable_lines"] == 1
    assert report["records"]["duplicates"] == 1
    assert report["rides"] == {"predicted": 6, "with_actuals": 5, "without_actuals": 1, "outside_filter": 0}
    assert report["versions"][V1]["n"] == 5
    assert report["versions"][V1]["rmse"] == pytest.approx(rmse(SERVED), rel=1e-12)
    assert report["versions"][V2]["rmse"] == pytest.approx(rmse(SHADOW), rel=1e-12)
    assert report["versions"][V2]["plausible_n"] == 4  # 3 miles in 11-25 minutes, from the actuals file
    [pair] = report["comparisons"]
    assert (pair["champion"], pair["challenger"], pair["n"]) == (V1, V2, 4)
    assert pair["champion_rmse"] == pytest.approx(rmse({r: SERVED[r] for r in SHADOW}), rel=1e-12)


def test_a_topic_that_does_not_exist_is_bad_input(broker, tmp_path):
    actuals = tmp_path / "actuals.csv"
    actuals.write_text("ride_id,actual_duration\nr0,11\n")
    code = main(["evaluate", "--predictions", broker.url("no-such-topic"), "--actuals", str(actuals),
                 "--report-dir", str(tmp_path / "r"), "--kafka-timeout", "10"])
    assert code == ExitCode.BAD_INPUT
    assert not (tmp_path / "r").exists()
