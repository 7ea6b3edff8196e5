"""A model version is the sha256 of its file: scgan calibrate in place records the version it replaced, and the
file keeps the normal images its new calibration rests on."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from scgan.artifacts.lineage import LineageError, file_sha256, restore
from scgan.artifacts.model_file import load_model
from scgan.cli import main

pytestmark = pytest.mark.integration


def test_calibrate_in_place_records_the_version_it_replaced(feature_model, demo_root, demo_category, tmp_path,
                                                           capsys):
    model = tmp_path / "model.pt"
    shutil.copyfile(feature_model[0].model_path, model)
    first = file_sha256(model)
    normal = demo_root / demo_category / "test" / "good"
    assert main(["calibrate", "--checkpoint", str(model), "--normal", str(normal), "--output", str(model)]) == 0
    loaded = load_model(model)
    step = loaded.lineage[-1]
    assert step["action"] == "calibrate" and step["parent"] == first and step["parent_name"] == "model.pt"
    assert step["changed"]["calibration_images"][1] == loaded.calibration.n_images == len(list(normal.glob("*.png")))
    assert len(loaded.calibration_images) == loaded.calibration.n_images
    assert all(str(im.dtype) == "torch.uint8" and im.shape[-1] == 3 for im in loaded.calibration_images)
    capsys.readouterr()
    assert main(["history", str(model)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("v")]
    assert [line.split("\t")[1] for line in lines] == [first[:12], file_sha256(model)[:12]]
    assert "not on disk (was model.pt)" in lines[0]  # replaced in place: only its hash remains
    with pytest.raises(LineageError, match="no longer on disk"):
        restore(model, loaded.lineage, first, tmp_path / "r.pt")


def test_restore_refuses_an_existing_output_and_a_short_or_unknown_hash(feature_model, tmp_path):
    model = feature_model[0].model_path
    lineage = load_model(model).lineage
    out = tmp_path / "r.pt"
    out.write_bytes(b"kept")
    with pytest.raises(LineageError, match="exists"):
        restore(model, lineage, file_sha256(model), out)
    with pytest.raises(LineageError, match="6 hex digits"):
        restore(model, lineage, "ab", tmp_path / "s.pt")
    with pytest.raises(LineageError, match="no version"):
        restore(model, lineage, "f" * 12, tmp_path / "s.pt")
    assert out.read_bytes() == b"kept" and not (tmp_path / "s.pt").exists()
    restore(model, lineage, file_sha256(model), out, overwrite=True)
    assert np.array_equal(np.frombuffer(out.read_bytes(), np.uint8), np.frombuffer(model.read_bytes(), np.uint8))
