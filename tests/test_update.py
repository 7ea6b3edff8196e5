"""scgan update: new normal images join a fitted PatchCore detector's bank (bounded), its calibration is fitted again
on the normal images its file keeps plus a held-out share of the new ones, a new file records its lineage, and the
input is never written to. Bad input is refused in one line with nothing written."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_FEATURES
from helpers import one_error_line, write_image
from scgan.artifacts.lineage import file_sha256
from scgan.artifacts.model_file import load_model, save_loaded
from scgan.cli import main

pytestmark = pytest.mark.integration


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fitted(feature_model) -> Path:
    return feature_model[0].model_path


@pytest.fixture(scope="module")
def new_images(demo_root, demo_category) -> Path:
    """The demo category's normal test images: normal images the model has not seen."""
    return demo_root / demo_category / "test" / "good"


def test_update_merges_the_new_images_recalibrates_and_records_its_lineage(fitted, new_images, tmp_path, capsys):
    before = _sha(fitted)
    old = load_model(fitted)
    out = tmp_path / "model2.pt"
    assert main(["update", "--checkpoint", str(fitted), "--output", str(out), str(new_images)]) == 0
    printed = capsys.readouterr().out
    assert _sha(fitted) == before  # the input is never written to
    new = load_model(out)
    n = len(list(new_images.glob("*.png")))
    step = new.lineage[-1]
    assert step["action"] == "update" and step["parent"] == before and step["parent_name"] == fitted.name
    assert sorted(a["sha256"] for a in step["added"]) == sorted(_sha(p) for p in new_images.glob("*.png"))
    held = [a for a in step["added"] if a["role"] == "validation"]
    assert len(held) == round(0.2 * n) and len(step["added"]) == n
    # The calibration rests on the file's own normal images plus the held-out new ones, and the file keeps them all.
    assert new.calibration.n_images == old.calibration.n_images + len(held) == len(new.calibration_images)
    assert np.array_equal(new.calibration_images[0].numpy(), old.calibration_images[0].numpy())
    bank_size = old.config.patchcore.bank_size
    assert new.parts["memory"].bank.shape[0] <= bank_size
    assert not np.array_equal(new.parts["memory"].bank.numpy(), old.parts["memory"].bank.numpy())
    # scale and whitening are the fitted ones: the space distances are measured in does not move
    assert np.array_equal(new.parts["memory"].scale.numpy(), old.parts["memory"].scale.numpy())
    score = old.default_score
    assert f"threshold ({score}): {old.calibration.scores[score].threshold:.6g} -> " in printed
    rows = [line.split("\t") for line in printed.splitlines() if line.startswith(str(new_images))]
    assert len(rows) == n
    into = [(float(r[2]), float(r[3])) for r in rows if r[1] == "bank"]
    # The images now in the bank score lower than before: their patches are their own nearest neighbours.
    assert np.mean([a for _, a in into]) < np.mean([b for b, _ in into])


def test_history_after_two_updates_and_a_restore_byte_identical(fitted, new_images, tmp_path, capsys):
    files = sorted(new_images.glob("*.png"))
    m2, m3 = tmp_path / "m2.pt", tmp_path / "m3.pt"
    assert main(["update", "--checkpoint", str(fitted), "--output", str(m2), *map(str, files[:3])]) == 0
    assert main(["update", "--checkpoint", str(m2), "--output", str(m3), "--parent", _sha(m2)[:10],
                 *map(str, files[3:])]) == 0
    capsys.readouterr()
    assert main(["history", str(m3), "--search", str(fitted.parent)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("v")]
    assert [line.split("\t")[1] for line in lines] == [_sha(p)[:12] for p in (fitted, m2, m3)]
    assert lines[0].endswith(str(fitted)) and "fitted" in lines[0]
    restored = tmp_path / "restored.pt"
    assert main(["history", str(m3), "--search", str(fitted.parent), "--restore", _sha(fitted)[:12],
                 "--output", str(restored)]) == 0
    assert restored.read_bytes() == fitted.read_bytes()


def test_a_rollback_to_a_version_no_longer_on_disk_names_the_missing_file(fitted, new_images, tmp_path, capsys):
    m2, m3 = tmp_path / "m2.pt", tmp_path / "m3.pt"
    assert main(["update", "--checkpoint", str(fitted), "--output", str(m2), str(new_images)]) == 0
    assert main(["update", "--checkpoint", str(m2), "--output", str(m3), "--holdout", "0",
                 str(next(new_images.glob("*.png")))]) == 0
    gone = _sha(m2)
    m2.unlink()
    capsys.readouterr()
    assert main(["history", str(m3), "--restore", gone[:8], "--output", str(tmp_path / "r.pt")]) == 1
    line = one_error_line(capsys.readouterr().err, "history")
    assert gone[:12] in line and "m2.pt" in line and "no longer on disk" in line
    assert not (tmp_path / "r.pt").exists()
    assert main(["history", str(m3)]) == 0
    assert "not on disk (was m2.pt)" in capsys.readouterr().out


def _refused(capsys, argv: list[str], output: Path, *words: str) -> None:
    existed = output.exists()
    before = output.read_bytes() if existed else None
    capsys.readouterr()
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err, argv[0])
    for w in words:
        assert w in line, line
    assert output.exists() == existed and (not existed or output.read_bytes() == before)


def test_bad_updates_are_refused_in_one_line_with_nothing_written(fitted, new_images, tmp_path, capsys, trained):
    out = tmp_path / "out.pt"
    good = str(new_images)
    broken = tmp_path / "broken" / "bad.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _refused(capsys, ["update", "--checkpoint", str(fitted), "--output", str(out), good, str(broken)], out, "bad.png")
    # the checkpoint is not the version this update names
    _refused(capsys, ["update", "--checkpoint", str(fitted), "--output", str(out), "--parent", "0" * 12, good], out,
             "not the parent", file_sha256(fitted)[:12])
    # an SCGAN's fitted parts take no new images: train again
    _refused(capsys, ["update", "--checkpoint", str(trained[0].model_path), "--output", str(out), good], out,
             "scgan train")
    # never over the input, never over an existing file unless asked
    _refused(capsys, ["update", "--checkpoint", str(fitted), "--output", str(fitted), "--overwrite", good], fitted,
             "never overwrites its input")
    out.write_bytes(b"kept")
    _refused(capsys, ["update", "--checkpoint", str(fitted), "--output", str(out), good], out, "exists")


def test_two_updates_into_one_output_at_once_the_second_is_refused(fitted, new_images, tmp_path, capsys):
    from scgan.utils.lock import folder_lock

    out = tmp_path / "out.pt"
    with folder_lock(tmp_path, "updating"):  # another update holds the output's folder
        _refused(capsys, ["update", "--checkpoint", str(fitted), "--output", str(out), str(new_images)], out,
                 "in use")
    assert main(["update", "--checkpoint", str(fitted), "--output", str(out), str(new_images)]) == 0


def test_images_of_another_channel_count(fitted, tmp_path, capsys, demo_root, demo_category):
    """A grey image for a colour model is used as grey RGB (a warning); a colour one for a grey model is refused."""
    from scgan.config import load_config
    from scgan.training.fit import train

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(grey)
    assert main(["update", "--checkpoint", str(fitted), "--output", str(tmp_path / "a.pt"), str(grey)]) == 0
    root = tmp_path / "grey_data"
    shutil.copytree(demo_root / demo_category, root / demo_category)
    for p in (root / demo_category).rglob("*.png"):
        Image.open(p).convert("L").save(p)  # a grey camera: patchcore.channels = auto fits a grey model
    cfg = load_config("default", overrides={**TINY_FEATURES, "data.root": str(root), "data.category": demo_category})
    grey_model = train(cfg, tmp_path / "grey_fit", progress=False).model_path
    assert load_model(grey_model).input_spec.channels == 1
    colour = write_image(tmp_path / "colour.png", 40, seed=3)
    _refused(capsys, ["update", "--checkpoint", str(grey_model), "--output", str(tmp_path / "b.pt"), str(colour)],
             tmp_path / "b.pt", "colour image", "grey")


def test_a_model_file_without_calibration_images_needs_the_normal_folder(fitted, new_images, tmp_path, capsys,
                                                                          demo_root, demo_category):
    old = load_model(fitted)
    old.calibration_images = None  # as files written before models kept them
    older = save_loaded(tmp_path / "older.pt", old)
    out = tmp_path / "out.pt"
    _refused(capsys, ["update", "--checkpoint", str(older), "--output", str(out), str(new_images)], out,
             "keeps no calibration images", "--normal")
    normal = demo_root / demo_category / "train" / "good"
    assert main(["update", "--checkpoint", str(older), "--output", str(out), "--normal", str(normal),
                 str(new_images)]) == 0
    assert load_model(out).calibration.n_images == len(list(normal.glob("*.png"))) + 1


def test_update_learns_the_false_alarms_of_a_feedback_folder(fitted, new_images, tmp_path, capsys):
    from scgan.data.feedback import record_feedback

    files = sorted(new_images.glob("*.png"))
    fb = tmp_path / "feedback"
    for p in files[:2]:
        record_feedback(fb, p.name, p.read_bytes(), {"label": "false_alarm", "model": file_sha256(fitted)})
    record_feedback(fb, files[2].name, files[2].read_bytes(), {"label": "missed_defect"})
    out = tmp_path / "out.pt"
    assert main(["update", "--checkpoint", str(fitted), "--output", str(out), "--feedback", str(fb)]) == 0
    added = {a["sha256"] for a in load_model(out).lineage[-1]["added"]}
    assert added == {_sha(p) for p in files[:2]}  # the false alarms, not the missed defect


def test_an_update_of_a_threshold_set_from_defects_says_that_it_is_fitted_on_normal_images_again(
        fitted, new_images, tmp_path, caplog):
    import logging

    loaded = load_model(fitted)
    loaded.calibration.threshold_rule = {"target": "catch", "rate": 0.95, "defects": "defects/"}
    chosen = save_loaded(tmp_path / "chosen.pt", loaded)
    with caplog.at_level(logging.WARNING, logger="scgan"):
        assert main(["update", "--checkpoint", str(chosen), "--output", str(tmp_path / "m2.pt"),
                     str(next(new_images.glob("*.png")))]) == 0
    assert "set from defective images" in caplog.text and "calibrate --defects" in caplog.text
    assert not load_model(tmp_path / "m2.pt").calibration.threshold_rule


def test_an_update_larger_than_one_buffer_merges_every_patch_buffer_by_buffer(fitted, new_images, monkeypatch):
    import torch

    from scgan.config.overrides import apply_mapping
    from scgan.data.io import load_image
    from scgan.training import patchcore, update

    loaded = load_model(fitted)
    cfg = apply_mapping(loaded.config, {"patchcore.max_patches": 50})  # fewer than one image's 64 patches
    images = [load_image(p, loaded.input_spec) for p in sorted(new_images.glob("*.png"))[:3]]
    merges = []
    real = patchcore.merge_bank  # what the update's merger calls
    monkeypatch.setattr(patchcore, "merge_bank",
                        lambda bank, new, *a: (merges.append(new.shape[0]), real(bank, new, *a))[1])
    parts = update.update_patchcore(cfg, dict(loaded.parts), images, torch.Generator().manual_seed(0))
    assert merges == [64] * len(images)  # each full buffer merged as it fills, every patch of every image
    assert parts["memory"].bank.shape[0] <= cfg.patchcore.bank_size
