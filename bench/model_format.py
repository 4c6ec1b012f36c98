"""Size and load time of the registered model in three formats, measured in one run (issue 18's choice).

    flock /tmp/bench.lock .venv/bin/python bench/model_format.py [--repeat 10]

The bundled model's weights as the registry's pipeline, written three ways:

* ``cloudpickle``: what ``train.py --register`` logged before (runs code when loaded);
* ``skops``: what it logs now (``mlflow.sklearn``'s ``serialization_format="skops"``, as MLflow
  writes it: uncompressed zip); loaded by the service's ``safe_format.loads`` (allow-list check
  + ``skops.io.loads``); also the same file deflated, for scale;
* ``json``: the plain-data alternative (vocabulary, coefficients, intercept) that the service
  would rebuild itself; MLflow's own loaders could not read it.

Also the one-off ``import skops.io`` in a fresh interpreter (it walks every scikit-learn module).
Medians of ``--repeat`` loads; the load average is printed, since the box is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_seconds(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args(argv)

    import cloudpickle
    import skops.io

    from ride_duration.model.loading import load_file
    from ride_duration.registry import safe_format
    from ride_duration.registry.mlflow_model import build_pipeline

    model = load_file(ROOT / "model" / "lin_reg.bin")
    pipeline = build_pipeline(model.dv, model.regressor, model.step)
    blobs = {
        "cloudpickle": cloudpickle.dumps(pipeline),
        "skops": skops.io.dumps(pipeline),
        "skops (deflated)": skops.io.dumps(pipeline, compression=zipfile.ZIP_DEFLATED),
        "json": json.dumps({"vocabulary": model.dv.vocabulary_, "coef": model.regressor.coef_.tolist(),
                            "intercept": float(model.regressor.intercept_)}).encode(),
    }
    loaders = {
        "cloudpickle": pickle.loads,
        "skops": safe_format.loads,
        "skops (deflated)": safe_format.loads,
        "json": json.loads,
    }
    print(f"load average {os.getloadavg()[0]:.1f}; {model.info['metadata'].get('n_features')} features; "
          f"median of {args.repeat} loads")
    for name, blob in blobs.items():
        seconds = median_seconds(lambda b=blob, f=loaders[name]: f(b), args.repeat)
        print(f"{name:18s} {len(blob) / 1e6:7.2f} MB  load {seconds * 1000:8.1f} ms")
    code = "import time; s = time.perf_counter(); import skops.io; print(time.perf_counter() - s)"
    cold = [float(subprocess.run([sys.executable, "-c", "import sklearn; " + code], capture_output=True,
                                 text=True, check=True).stdout) for _ in range(3)]
    print(f"import skops.io after sklearn, fresh interpreter: median {statistics.median(cold):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
