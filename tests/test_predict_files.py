"""scgan predict on awkward files: every per-file problem skips or escapes that file, never the others' results."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from helpers import csv_rows
from scgan.cli import main

pytestmark = pytest.mark.integration


def _good(demo_root, demo_category) -> list[Path]:
    return sorted((demo_root / demo_category / "test" / "good").glob("*.png"))


def _predict(model, out, *inputs, extra=()) -> int:
    return main(["predict", "--checkpoint", str(model), f"--output={out}", "--no-progress", *extra,
                 *map(str, inputs)])


def test_long_and_non_utf8_names_are_scored_and_the_csv_is_written(trained, demo_root, demo_category, tmp_path):
    """A stem of >= 232 bytes and a non-UTF-8 name (caf\\xe9.png) are scored like any file: the CSV names them in
    escaped, readable UTF-8 and their overlays get names of at most 130 bytes."""
    good = _good(demo_root, demo_category)
    src = tmp_path / "in"
    src.mkdir()
    long_name = src / ("x" * 240 + ".png")
    latin1 = Path(os.fsdecode(os.path.join(os.fsencode(src), b"caf\xe9.png")))
    plain = src / "plain.png"
    for p, g in zip((long_name, latin1, plain), good):
        shutil.copy(g, p)
    out = tmp_path / "out"
    assert _predict(trained[0].model_path, out, src) == 0
    rows = csv_rows(out / "predictions.csv")
    assert len(rows) == 3 and all(r["decision"] in ("normal", "anomalous") for r in rows)
    assert any(r["path"].endswith("caf\\xe9.png") for r in rows)  # escaped, readable UTF-8
    overlays = sorted((out / "overlays").rglob("*.png"))
    assert len(overlays) == 3 and all(len(p.name.encode()) <= 130 for p in overlays)


def test_a_fifo_is_skipped_with_a_reason_instead_of_blocking(trained, demo_root, demo_category, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = _good(demo_root, demo_category)[0]
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("predict blocked on a FIFO"))
    signal.alarm(60)
    try:
        assert _predict(trained[0].model_path, tmp_path / "out", fifo, good) == 0
    finally:
        signal.alarm(0)
    rows = {Path(r["path"]).name: r for r in csv_rows(tmp_path / "out" / "predictions.csv")}
    assert "not a regular file" in rows["pipe.png"]["decision"]
    assert rows[good.name]["decision"] in ("normal", "anomalous")


def test_hidden_files_and_folders_are_ignored_in_folders(trained, demo_root, demo_category, tmp_path):
    src = tmp_path / "in"
    (src / ".thumbs").mkdir(parents=True)
    good = _good(demo_root, demo_category)[0]
    shutil.copy(good, src / "a.png")
    (src / "._a.png").write_bytes(b"\0\5\26\7 macOS resource fork")
    shutil.copy(good, src / ".thumbs" / "b.png")
    assert _predict(trained[0].model_path, tmp_path / "out", src) == 0
    assert [Path(r["path"]).name for r in csv_rows(tmp_path / "out" / "predictions.csv")] == ["a.png"]


def test_csv_cells_never_start_a_formula(trained, demo_root, demo_category, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the cells start with the file names
    shutil.copy(_good(demo_root, demo_category)[0], "=HYPERLINK(1).png")
    Path("+junk.png").write_bytes(b"junk")
    assert _predict(trained[0].model_path, "-out", "=HYPERLINK(1).png", "+junk.png") == 0
    for row in csv_rows(tmp_path / "-out" / "predictions.csv"):
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@")), row


def test_overlays_keep_the_relative_path(trained, demo_root, demo_category, tmp_path):
    """crack/000.png and scratch/000.png get distinct overlays named after them."""
    good = _good(demo_root, demo_category)
    src = tmp_path / "in"
    for defect, g in zip(("crack", "scratch"), good):
        (src / defect).mkdir(parents=True)
        shutil.copy(g, src / defect / "000.png")
    assert _predict(trained[0].model_path, tmp_path / "out", src) == 0
    overlays = tmp_path / "out" / "overlays"
    names = sorted(str(p.relative_to(overlays)) for p in overlays.rglob("*.png"))
    assert names == ["crack/000.png", "scratch/000.png"]
    rows = csv_rows(tmp_path / "out" / "predictions.csv")
    assert {Path(r["overlay"]).parent.name for r in rows} == {"crack", "scratch"}


def test_a_rerun_leaves_only_its_own_overlays(trained, demo_root, demo_category, tmp_path):
    good = _good(demo_root, demo_category)
    out = tmp_path / "out"
    assert _predict(trained[0].model_path, out, good[0], good[1]) == 0
    (out / "overlays" / "mine.txt").write_text("a file of the user's: never removed")
    assert _predict(trained[0].model_path, out, good[2]) == 0
    left = sorted(p.name for p in (out / "overlays").iterdir())
    assert left == sorted([f"{good[2].stem}.png", "mine.txt"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == [f"overlays/{good[2].stem}.png", "predictions.csv"] and manifest["scored"] == 1
    assert _predict(trained[0].model_path, out, good[2], extra=["--no-overlays"]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["mine.txt"]


def test_memory_is_bounded_for_a_9000_pixel_image(exported_onnx, tmp_path):
    """predict of a 9000 x 9000 image stays under 2 GB: the image is decoded reduced, never at full size (ONNX: a
    quick process)."""
    big = tmp_path / "big.png"
    Image.new("RGB", (9000, 9000), (120, 30, 200)).save(big, compress_level=1)
    code = textwrap.dedent(f"""
        import resource, sys
        from scgan.cli import main
        rc = main(["predict", "--onnx", {str(exported_onnx)!r}, "--output", {str(tmp_path / 'out')!r},
                   "--no-progress", {str(big)!r}])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_mb = int(proc.stdout.strip().splitlines()[-1])
    # Decoding at full size peaks at 3.76 GB; the decoded PNG itself is 243 MB. Decoded reduced, measured here: 724 MB
    # (an idle run) and 1389 MB (with four other jobs running), so the bound sits well under the full-size peak.
    assert peak_mb < 2000, f"peak memory {peak_mb} MB"
    ov = Image.open(next((tmp_path / "out" / "overlays").glob("*.png")))
    assert max(ov.size) <= 2048
