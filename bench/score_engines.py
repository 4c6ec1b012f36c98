"""rows/s of the two ``score`` engines on the same month, with the same model, in one run.

    flock /tmp/bench.lock .venv/bin/python bench/score_engines.py --input ../shared/data/green_tripdata_2021-02.parquet

* ``local``: ``score.score_file`` (pyarrow chunks + the service's compiled fast path, one process);
* ``spark``: ``score_spark.score_file`` (``mlflow.pyfunc.spark_udf`` on ``--master``, default local[2]).

Both score the bundled model (or ``--model-uri``); the SparkSession is started once before the
timed runs (its start-up is reported apart). Each engine runs ``--repeat`` times, best kept; the
load average is printed with the numbers, since the box is shared. Also checks that the two
outputs agree to 1e-9.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--model-uri", default=None)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)

    import pyarrow.parquet as pq

    from ride_duration.config import Settings
    from ride_duration.jobs import score, score_spark
    from ride_duration.startup import load_model

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    model = load_model(Settings(), None, args.model_uri)
    load_before = os.getloadavg()
    started = time.perf_counter()
    spark = score_spark.session(args.master, "score-engines-bench", {"spark.ui.enabled": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - started
    results: dict[str, list[dict]] = {"local": [], "spark": []}
    with tempfile.TemporaryDirectory(prefix="score-engines-") as tmp:
        out = {"local": Path(tmp) / "local.parquet", "spark": Path(tmp) / "spark.parquet"}
        for _ in range(args.repeat):
            results["local"].append(score.score_file(args.input, out["local"], model))
            results["spark"].append(score_spark.score_file(args.input, out["spark"], model, args.model_uri,
                                                           spark=spark))
        a = pq.read_table(out["local"], columns=["predicted_duration"]).column(0).to_pylist()
        b = pq.read_table(out["spark"], columns=["predicted_duration"]).column(0).to_pylist()
    spark.stop()
    same = len(a) == len(b) and all((x is None and y is None) or (x is not None and y is not None and math.isclose(
        x, y, rel_tol=1e-9, abs_tol=1e-12)) for x, y in zip(a, b, strict=True))
    load_after = os.getloadavg()
    rows = results["local"][0]["rows"]
    best = {k: max(r["rows_per_second"] for r in v) for k, v in results.items()}
    print(f"input {args.input.name}: {rows} rows, model {model.version}, spark master {args.master}, "
          f"cores {os.cpu_count()}")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"spark session start-up: {session_s:.1f} s (not in the rows/s)")
    print("| engine | runs (s) | best rows/s |")
    print("|---|---|---|")
    for k, v in results.items():
        print(f"| {k} | {', '.join(str(r['seconds']) for r in v)} | {best[k]:,} |")
    print(f"local / spark rows/s ratio: {best['local'] / best['spark']:.1f}; predictions equal to 1e-9: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
