import json
import math

import pytest

from ride_duration.model.loading import ModelLoadError, load_file, sha256_bytes
from tests.conftest import BUNDLED, REFERENCE_RIDE
from tests.synthetic import tlc_data_dir

ZOOMCAMP = tlc_data_dir() / "zoomcamp_lin_reg.bin"
ZOOMCAMP_REFERENCE = 26.43883355119793


def test_bundled_model_loads_with_verified_digest():
    model = load_file(BUNDLED / "lin_reg.bin")
    meta = json.loads((BUNDLED / "metadata.json").read_text())
    assert model.info["sha256"] == meta["sha256"]
    assert model.info["sha256_verified"] is True
    assert model.version == meta["version"]
    assert model.source == "bundled"
    assert model.fast is not None
    assert math.isfinite(model.predict([REFERENCE_RIDE])[0])


def test_one_changed_byte_is_refused(bundle_copy):
    blob = bytearray(bundle_copy.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bundle_copy.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_file(bundle_copy)


def test_explicit_sha256_wins_over_metadata(bundle_copy):
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_file(bundle_copy, expected_sha256="0" * 64)
    good = sha256_bytes(bundle_copy.read_bytes())
    assert load_file(bundle_copy, expected_sha256=good.upper()).info["sha256"] == good


def test_file_without_metadata_loads_with_a_warning(bundle_copy):
    (bundle_copy.parent / "metadata.json").unlink()
    model = load_file(bundle_copy, source="file")
    assert model.info["sha256_verified"] is False
    assert any("integrity not verified" in w for w in model.info["warnings"])
    assert model.version.startswith("sha256-")


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_file(tmp_path / "nope.bin")


def test_not_a_pair_is_a_load_error(tmp_path):
    import pickle

    path = tmp_path / "m.bin"
    path.write_bytes(pickle.dumps({"not": "a tuple"}))
    with pytest.raises(ModelLoadError, match="tuple"):
        load_file(path)


def test_garbage_is_a_load_error(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError, match="cannot unpickle"):
        load_file(path)


def test_course_model_loads_and_reports_the_version_mismatch():
    if not ZOOMCAMP.is_file():
        pytest.skip(f"{ZOOMCAMP} not found (set TLC_DATA_DIR; default ../shared/data)")
    model = load_file(ZOOMCAMP, source="file")
    assert model.predict([REFERENCE_RIDE]) == [ZOOMCAMP_REFERENCE]
    assert model.step.to_dict() == {"name": "course-v1"}  # no metadata.json: the course's feature step
    assert any("InconsistentVersionWarning" in w and "1.0.2" in w for w in model.info["warnings"])
    assert model.fast is not None


def test_the_metadata_feature_step_is_applied(bundle_copy):
    meta = json.loads((bundle_copy.parent / "metadata.json").read_text())
    model = load_file(bundle_copy)
    assert model.step.to_dict() == meta["feature_step"] == model.info["feature_step"]
    near, far = ({**REFERENCE_RIDE, "trip_distance": d} for d in (4.0, 4.0 + meta["feature_step"]["max_miles"]))
    assert model.predict([near]) != model.predict([far])  # the distance is used, not flattened


def test_an_unknown_feature_step_is_refused_before_unpickling(bundle_copy):
    meta_path = bundle_copy.parent / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_step"] = {"name": "cubic-v9"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unknown feature step 'cubic-v9'"):
        load_file(bundle_copy)
