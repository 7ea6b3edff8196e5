"""Runs on disk: a folder holds one run's set of files. Two runs into one folder at once are refused (predict takes
the folder's lock like train, test and calibrate), and a ``scgan test`` rerun that fails while writing leaves the
previous run's set whole (its files are written beside them and swapped in at the end)."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import one_error_line
from scgan.cli import main
from scgan.inference.detector import Detector
from scgan.inference.predict import run_predict
from scgan.utils.lock import FolderLockedError, folder_lock, locked_output
from scgan.utils.manifest import MANIFEST
from scgan.utils.staging import STAGING_PREFIX, staged_outputs


def _zero_detector() -> Detector:
    def score(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(x), 1), np.float32), np.zeros((len(x), *x.shape[2:]), np.float32)

    return Detector(score, spec=32, score_names=("s",), default_score="s", calibration=None, backend="test")


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` and below, by relative path, but those of a run's temporary folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).parts[0].startswith(STAGING_PREFIX)}


@pytest.mark.unit
def test_staged_outputs_replace_the_whole_set_or_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("a.txt", "old a"), ("b.txt", "old b"), (MANIFEST, "old manifest"), ("mine.txt", "user's")):
        (out / name).write_text(text)
    before = _contents(out)
    with pytest.raises(OSError, match="disk full"):
        with staged_outputs(out, ["a.txt", "b.txt"]) as stage:
            (stage / "a.txt").write_text("new a")
            raise OSError(errno.ENOSPC, "disk full")
    assert _contents(out) == before  # the old set, whole; the temporary folder gone
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())
    with staged_outputs(out, ["a.txt", "b.txt"]) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / MANIFEST).write_text("new manifest")
        assert _contents(out) == before  # nothing changes before the block ends
    # b.txt was the old run's and this one wrote none: gone; a file no run of the command writes stays.
    assert _contents(out) == {"a.txt": b"new a", MANIFEST: b"new manifest", "mine.txt": b"user's"}


@pytest.mark.unit
def test_a_staging_folder_a_killed_run_left_is_removed_by_the_next(tmp_path):
    stale = tmp_path / f"{STAGING_PREFIX}abc123"
    stale.mkdir()
    (stale / "metrics.json").write_text("{}")
    with staged_outputs(tmp_path, []) as stage:
        assert not stale.exists() and stage.parent == tmp_path
    assert not any(p.name.startswith(STAGING_PREFIX) for p in tmp_path.iterdir())


@pytest.mark.unit
def test_predict_refuses_a_folder_another_run_is_writing(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(image)
    out = tmp_path / "out"
    with locked_output(out, "predicting"):  # another predict (or watch, test, ...) working there
        with pytest.raises(FolderLockedError, match=f"{out} is in use by pid {os.getpid()}"):
            run_predict([image], out, detector=_zero_detector(), progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".scgan.lock"]  # nothing written
    res = run_predict([image], out, detector=_zero_detector(), progress=False)
    assert len(res.predictions) == 1 and not (out / ".scgan.lock").exists()  # free again, and released after


@pytest.mark.integration
def test_a_second_predict_into_a_busy_folder_is_refused_in_one_line(trained, tmp_path, capsys, demo_root):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "predicting"):
        rc = main(["predict", "--checkpoint", str(trained[0].model_path), "--output", str(out), "--no-progress",
                   str(demo_root)])
        assert rc == 1 and "is in use by pid" in one_error_line(capsys.readouterr().err, "predict")
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.integration
def test_a_large_image_with_a_tiny_tile_fails_fast_in_one_line(trained, tmp_path, capsys):
    """``scgan predict --tile 16`` on an 8000 x 6000 image (333,500 tiles, which ran for hours without a line): refused
    at the image, stating the count, before any tile is scored; a tile below half the working resolution (32 px
    here) is refused before any image is read."""
    big = tmp_path / "big.png"
    Image.new("RGB", (8000, 6000), (90, 90, 90)).save(big)
    args = ["predict", "--checkpoint", str(trained[0].model_path), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main([*args, "--tile", "16", str(big)]) == 1
    line = one_error_line(capsys.readouterr().err, "predict")
    assert "would take 333,500 tiles of 16 pixels, more than the 4,096 allowed" in line and "at least" in line
    assert main([*args, "--tile", "8", str(big)]) == 1
    assert "tile must be at least 16 pixels" in one_error_line(capsys.readouterr().err, "predict")


def _failing_html(monkeypatch):
    """Make the report's HTML fail to write as on a full disk, after metrics.json, scores.csv, report.md and the
    pictures were written."""
    import scgan.reporting.report as report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "render_html", full)


@pytest.mark.integration
def test_a_failed_test_rerun_leaves_the_previous_set_whole(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["test", "--checkpoint", str(trained[0].model_path), "--output", str(out), "--no-progress"]
    assert main(args) == 0
    before = _contents(out)
    listed = json.loads(before[MANIFEST])["files"]
    assert {"metrics.json", "scores.csv", "report.md", "report.html", "roc.png"} <= set(listed)
    with monkeypatch.context() as m:
        _failing_html(m)
        assert main(args) == 1
    assert "No space left" in one_error_line(capsys.readouterr().err, "test")
    assert _contents(out) == before  # every file of the first run, byte for byte; nothing of the second
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir())
    # A rerun without a report replaces the set: the report's files go, the manifest lists what is there.
    assert main([*args, "--no-report"]) == 0
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(listed) == ["metrics.json", "scores.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*listed, MANIFEST])
