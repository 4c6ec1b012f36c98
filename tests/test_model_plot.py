"""docs/model.md's curve plot shows the bundled model (``scripts/plot_model_curves.py`` made it from it)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import zlib

import numpy as np

from tests.conftest import BUNDLED
from tests.synthetic import ROOT

SCRIPT = ROOT / "scripts" / "plot_model_curves.py"
REGENERATE = "regenerate it: .venv/bin/python scripts/plot_model_curves.py"


def load_script():
    spec = importlib.util.spec_from_file_location("plot_model_curves", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_text(path) -> dict[str, str]:
    """The PNG's tEXt/zTXt/iTXt chunks (no imaging library needed)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    out, at = {}, 8
    while at < len(blob):
        (length,), kind = struct.unpack(">I", blob[at:at + 4]), blob[at + 4:at + 8]
        body = blob[at + 8:at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(value[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")
            _, _, text = rest.partition(b"\0")
            out[key.decode("latin-1")] = (zlib.decompress(text) if flag else text).decode("utf-8")
        at += 12 + length
    return out


def test_the_plotted_after_curves_are_the_bundled_model():
    script = load_script()
    data = json.loads(script.DATA.read_text())
    meta = json.loads((BUNDLED / "metadata.json").read_text())
    assert data["after"]["sha256"] == meta["sha256"], f"the plot shows another model; {REGENERATE}"
    fresh = script.curves(BUNDLED / "lin_reg.bin")
    for pair, minutes in fresh["pairs"].items():
        assert np.allclose(data["after"]["pairs"][pair], minutes, atol=1e-5), f"{pair}: {REGENERATE}"
    assert data["distances"] == script.DISTANCES


def test_the_png_is_drawn_from_that_data():
    script = load_script()
    data = json.loads(script.DATA.read_text())
    expected = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    assert png_text(script.PNG).get("Description") == f"model-curves.json sha256 {expected}", REGENERATE


def test_the_page_shows_the_plot():
    assert "img/model-curves.png" in (ROOT / "docs" / "model.md").read_text()
