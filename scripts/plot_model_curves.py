"""Before/after curves of the model for a few zone pairs: ``docs/img/model-curves.png`` (docs/model.md).

    .venv/bin/python scripts/plot_model_curves.py                      # after = the bundled model
    .venv/bin/python scripts/plot_model_curves.py --before OLD/lin_reg.bin

The plotted numbers go to ``docs/img/model-curves.json`` (with the sha256 of each bundle), and
the PNG carries the sha256 of that JSON in its ``Description``, so ``tests/test_model_plot.py``
can check that the page shows the bundled model: it recomputes the "after" curves through
``LoadedModel.predict`` and compares. The "before" curves (``flagged-v2``, the bundle this one
replaced) are kept from the JSON unless ``--before`` names that model's file again
(``git show 4aa07a7:model/lin_reg.bin`` with its ``metadata.json``).
Needs matplotlib (the ``train`` Pipfile category).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAIRS = ((10, 50), (74, 75), (43, 151), (7, 138))
"""Zone pairs plotted: the README's reference pair, two neighbouring zones, a common short pair,
Astoria to LaGuardia."""
DISTANCES = [round(i * 0.1, 1) for i in range(0, 701)]
"""0 to 70 miles every 0.1 mile (0 = not recorded, a circle; over 60 is answered with a warning)."""
PNG = ROOT / "docs" / "img" / "model-curves.png"
DATA = ROOT / "docs" / "img" / "model-curves.json"


def curves(model_path: Path) -> dict:
    """The model's minutes for every plotted pair and distance, through the service's own predictor."""
    from ride_duration.model.loading import load_file

    model = load_file(model_path)
    out = {"version": model.version, "sha256": model.info["sha256"], "feature_step": model.step.to_dict(),
           "pairs": {}}
    for pu, do in PAIRS:
        rides = [{"PULocationID": pu, "DOLocationID": do, "trip_distance": d} for d in DISTANCES]
        out["pairs"][f"{pu}_{do}"] = [round(v, 6) for v in model.predict(rides)]
    return out


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (pu, do) in zip(axes.ravel(), PAIRS, strict=True):
        key = f"{pu}_{do}"
        for which, style in (("before", {"color": "tab:red", "ls": "--"}), ("after", {"color": "tab:blue"})):
            model = data[which]
            minutes = model["pairs"][key]
            ax.plot(DISTANCES[1:], minutes[1:], label=f"{which}: {model['feature_step']['name']}", **style)
            ax.plot([0], minutes[:1], "o", color=style["color"], fillstyle="none",
                    label=f"{which}: 0 mi (not recorded)")
        ax.axvspan(60, DISTANCES[-1], color="0.9", label="over 60 mi: warning")
        ax.set_title(f"PU {pu} \u2192 DO {do}")
        ax.set_ylabel("predicted minutes")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("trip_distance (miles)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Predicted duration against distance, before and after the monotone model")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Description": f"model-curves.json sha256 {digest(data)}", "Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--after", type=Path, default=ROOT / "model" / "lin_reg.bin", help="the new model (default: bundle)")
    p.add_argument("--before", type=Path, default=None, help="the model it replaced (default: keep the JSON's)")
    args = p.parse_args(argv)
    if args.before is not None:
        before = curves(args.before)
    elif DATA.is_file():
        before = json.loads(DATA.read_text())["before"]
    else:
        p.error(f"{DATA} does not exist yet: pass --before")
    data = {"distances": DISTANCES, "before": before, "after": curves(args.after)}
    DATA.write_text(json.dumps(data, sort_keys=True) + "\n")
    plot(data, PNG)
    print(f"wrote {PNG.relative_to(ROOT)} and {DATA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
