"""Bad input on the command line: one clear line on stderr, a non-zero exit, no traceback (``--debug`` shows it).

Most cases call ``scgan.cli.main`` in-process; a few run ``python -m scgan`` in a real subprocess, where
nothing (pytest's warning capture, capsys) could hide a traceback or a stray warning.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from conftest import TINY
from scgan.cli import main

TINY_ARGS = ["--preset", "cpu", *(f"{k}={v}" for k, v in TINY.items())]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of an in-process `scgan ...` call."""
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def _assert_one_error_line(rc: int, err: str, command: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scgan {command}: error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, demo_root, demo_category) -> dict[str, Path]:
    """Copies of the demo data set with one thing broken each, and a few stray files."""
    base = tmp_path_factory.mktemp("bad_data")
    roots = {}
    for name in ("empty_train", "corrupt", "no_masks"):
        shutil.copytree(demo_root, base / name)
        roots[name] = base / name
    for p in (roots["empty_train"] / demo_category / "train" / "good").iterdir():
        p.unlink()
    first = sorted((roots["corrupt"] / demo_category / "train" / "good").iterdir())[0]
    first.write_bytes(first.read_bytes()[:40])  # a truncated PNG
    shutil.rmtree(roots["no_masks"] / demo_category / "ground_truth")
    roots["regular_file"] = base / "a_file"
    roots["regular_file"].write_text("not a folder")
    roots["not_a_checkpoint"] = base / "notes.pt"
    roots["not_a_checkpoint"].write_text("these are notes, not weights")
    roots["random_bytes"] = base / "random.ckpt"
    roots["random_bytes"].write_bytes(os.urandom(4096))
    return roots


def _train(root, category, out, *extra) -> list[str]:
    args = ["train", "--root", str(root), "--output", str(out), "--no-progress", *TINY_ARGS, *extra]
    return args + (["--category", category] if category is not None else [])


TRAIN_CASES = {
    # name: (bad_data key or None for the demo root, category (None: not given; "washer" is the demo
    # category), extra args with {bad_data key} placeholders, fragments the error line must hold)
    "missing dataset root": ("missing", "washer", [], ["root folder not found", "missing_root"]),
    "no category given": (None, None, [], ["no category given", "--category"]),
    "category folder missing": (None, "bottle", [], ["bottle", "not found", "categories present", "washer"]),
    "unknown category": (None, "bogus", [], ["unknown MVTec AD category 'bogus'", "valid categories", "washer"]),
    "empty training folder": ("empty_train", "washer", [], ["no training images in"]),
    "corrupt image": ("corrupt", "washer", [], ["cannot read image", "000.png", "skip_bad_images"]),
    "output under a regular file": (None, "washer", ["--output", "{regular_file}/run"],
                                    ["cannot write to output folder", "Not a directory"]),
    "image size not a power of two": (None, "washer", ["image_size=48"], ["power of two", "48"]),
    "more CPU devices than cores": (None, "washer", ["--devices", "64"], ["devices=64", "CPU core"]),
    "unknown override key": (None, "washer", ["colour=red"], ["unknown config key 'colour'", "scgan config"]),
    "bad override value": (None, "washer", ["epochs=many"], ["train.epochs", "expected an integer", "many"]),
    "override without =": (None, "washer", ["epochs"], ["'epochs' is not of the form key=value"]),
    "config value out of range": (None, "washer", ["beta=2"], ["beta must be in [0, 1]"]),
    "resume from a missing checkpoint": (None, "washer", ["--resume", "{missing}/last.ckpt"],
                                         ["checkpoint to resume from not found"]),
    "resume from a file that is not a checkpoint": (None, "washer", ["--resume", "{not_a_checkpoint}"],
                                                     ["cannot resume from", "not a training checkpoint"]),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, capsys, tmp_path, demo_root, demo_category, bad_data):
    root_key, category, extra, fragments = TRAIN_CASES[case]
    assert demo_category == "washer"
    paths = {**{k: str(v) for k, v in bad_data.items()}, "missing": str(tmp_path / "missing_root")}
    root = demo_root if root_key is None else paths[root_key]
    extra = [a.format(**paths) for a in extra]
    rc, err = _run(capsys, _train(root, category, tmp_path / "out", *extra))
    _assert_one_error_line(rc, err, "train", *fragments)
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.unit
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_train_gpu_without_gpu(capsys, tmp_path, demo_root):
    rc, err = _run(capsys, _train(demo_root, "washer", tmp_path / "out", "--accelerator", "gpu"))
    _assert_one_error_line(rc, err, "train", "no CUDA GPU", "--accelerator cpu")


@pytest.mark.unit
def test_more_gpus_than_present_is_refused(monkeypatch):
    from scgan.training.gan import check_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices("gpu", 2)
    check_devices("auto", "auto")
    with pytest.raises(ValueError, match="devices=3 but this machine has 2 GPU"):
        check_devices("gpu", 3)
    with pytest.raises(ValueError, match="devices=8 but this machine has 2 GPU"):
        check_devices("auto", "8")


@pytest.mark.unit
def test_test_and_predict_bad_checkpoints(capsys, tmp_path, bad_data, demo_root):
    for command in ("test", "predict"):
        inputs = [str(demo_root)] if command == "predict" else []
        for ckpt, fragments in ((tmp_path / "nope.pt", ["checkpoint not found", "nope.pt"]),
                                (bad_data["not_a_checkpoint"], ["is not an scgan checkpoint"]),
                                (bad_data["random_bytes"], ["is not an scgan checkpoint"]),
                                (tmp_path, ["is a folder"])):
            rc, err = _run(capsys, [command, "--checkpoint", str(ckpt), "--output", str(tmp_path / "o"),
                                    "--no-progress", *inputs])
            _assert_one_error_line(rc, err, command, *fragments)


@pytest.mark.integration
def test_test_output_that_cannot_be_written(capsys, trained, bad_data, demo_root):
    res, _ = trained
    for command, extra in (("test", ["--no-report"]), ("predict", [str(demo_root)])):
        rc, err = _run(capsys, [command, "--checkpoint", str(res.model_path), "--no-progress",
                                "--output", str(bad_data["regular_file"] / "out"), *extra])
        _assert_one_error_line(rc, err, command, "cannot write to output folder")


@pytest.mark.integration
def test_anomalous_images_without_masks_need_image_level_only(capsys, trained, bad_data, tmp_path):
    res, _ = trained
    args = ["test", "--checkpoint", str(res.model_path), "--root", str(bad_data["no_masks"]), "--no-progress",
            "--no-report", "--output", str(tmp_path / "out")]
    rc, err = _run(capsys, args)
    _assert_one_error_line(rc, err, "test", "has no ground-truth mask", "require_masks")
    assert not (tmp_path / "out" / "metrics.json").exists()

    rc, err = _run(capsys, [*args, "--image-level-only"])
    assert rc == 0, err
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["pixel_auroc"] is None and m["aupro"] is None
    # The labels come from the folders alone, still lined up with the scores: the paper's AS ranks the demo's
    # large defects above the normal images (1.0 for every training seed tried; chance would be 0.5).
    assert m["scores"]["as"]["image_auroc"] >= 0.8


@pytest.mark.unit
def test_debug_shows_the_traceback(tmp_path, demo_root):
    with pytest.raises(ValueError, match="power of two"):
        main(["--debug", *_train(demo_root, "washer", tmp_path / "out", "image_size=48")])


# ---- predict: bad image files are reported and skipped -------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bad_images(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    files = {"good": folder / "good.png", "random": folder / "random.png", "truncated": folder / "truncated.png",
             "huge": folder / "huge.png", "empty": folder / "empty.jpg"}
    shutil.copy(good, files["good"])
    files["random"].write_bytes(os.urandom(3000))
    files["truncated"].write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # a header claiming 10^10 RGB pixels
    files["huge"].write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                              + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.integration
def test_predict_skips_unreadable_files_and_scores_the_rest(capsys, caplog, trained, tmp_path, demo_root,
                                                            demo_category):
    res, _ = trained
    good = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    files = _bad_images(tmp_path / "in", good)
    rc, err = _run(capsys, ["predict", "--checkpoint", str(res.model_path), "--output", str(tmp_path / "out"),
                            "--no-progress", str(tmp_path / "in")])
    assert rc == 0, err  # exit 0: at least one image was scored
    assert "Traceback" not in err
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "out" / "predictions.csv"))}
    assert set(rows) == {p.name for p in files.values()}
    assert rows["good.png"]["decision"] in ("normal", "anomalous") and float(rows["good.png"]["score"]) >= 0
    for name in ("random", "truncated", "huge", "empty"):
        row = rows[files[name].name]
        assert row["decision"].startswith("error: ") and row["score"] == "", row
        assert any(files[name].name in r.getMessage() for r in caplog.records)  # and warned about (stderr)
    assert "too large" in rows["huge.png"]["decision"] and "truncated" in rows["truncated.png"]["decision"]


@pytest.mark.integration
def test_predict_with_no_readable_image_fails(capsys, trained, tmp_path, demo_root, demo_category):
    res, _ = trained
    good = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    files = _bad_images(tmp_path / "in", good)
    files["good"].unlink()
    rc, err = _run(capsys, ["predict", "--checkpoint", str(res.model_path), "--output", str(tmp_path / "out"),
                            "--no-progress", str(tmp_path / "in")])
    last = err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("scgan predict: error: none of the 4 input file(s) could be read")
    assert "Traceback" not in err
    assert len(list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))) == 4


# ---- real processes -------------------------------------------------------------------------------
def _scgan(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "scgan", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.system
def test_subprocess_error_is_one_line_and_debug_shows_traceback(tmp_path):
    args = ["config", "image_sise=64"]  # a typo'd key; fails before torch is imported, so this runs fast
    p = _scgan(args, tmp_path)
    _assert_one_error_line(p.returncode, p.stderr, "config", "unknown config key 'image_sise'")
    assert p.returncode == 1 and p.stdout == ""
    p = _scgan(["--debug", *args], tmp_path)
    assert p.returncode == 1 and "Traceback (most recent call last)" in p.stderr and "ValueError" in p.stderr


@pytest.mark.system
def test_subprocess_nan_loss_is_one_line(tmp_path, demo_root, demo_category):
    """lr = 1e30 blows the weights up in the first epoch: one line naming epoch, step and loss term."""
    p = _scgan(_train(demo_root, demo_category, tmp_path / "o", "epochs=1", "lr=1e30"), tmp_path)
    line = _assert_one_error_line(p.returncode, p.stderr, "train", "loss ", "became", "epoch 0", "step ")
    assert "nan" in line or "inf" in line
    assert p.returncode == 1 and not (tmp_path / "o" / "model.pt").exists()


# ---- option errors: one line naming the option, the value and what is allowed; --help still prints the usage --------
OPTION_CASES = {
    # name: (argv, the error line's command, fragments it must hold)
    "tile zero": (["predict", "--checkpoint", "m.pt", "--output", "o", "--tile", "0", "x.png"], "predict",
                  ["argument --tile", "positive integer", "got 0"]),
    "tile not a number": (["predict", "--checkpoint", "m.pt", "--output", "o", "--tile", "abc", "x.png"], "predict",
                          ["argument --tile", "positive integer", "'abc'"]),
    "batch size too large": (["predict", "--checkpoint", "m.pt", "--output", "o", "--batch-size", "100000", "x.png"],
                             "predict", ["argument --batch-size", "from 1 to 1024", "100000"]),
    "port out of range": (["serve", "--checkpoint", "m.pt", "--port", "70000"], "serve",
                          ["argument --port", "0 to 65535", "70000"]),
    "ray workers too many": (["predict", "--checkpoint", "m.pt", "--output", "o", "--engine", "ray", "--workers",
                              "100000", "x.png"], "predict", ["argument --workers", "from 1 to 64", "got 100000"]),
    "no workers": (["serve", "--checkpoint", "m.pt", "--workers", "0"], "serve",
                   ["argument --workers", "from 1 to 64", "got 0"]),
    "queue too long": (["serve", "--checkpoint", "m.pt", "--queue", "5000"], "serve",
                       ["argument --queue", "from 0 to 1024", "may hold its upload", "got 5000"]),
    "upload too large": (["serve", "--checkpoint", "m.pt", "--max-upload-mb", "10000"], "serve",
                         ["argument --max-upload-mb", "from 1 to 4096", "got 10000"]),
    "pixels too many": (["serve", "--checkpoint", "m.pt", "--max-pixels", "2000000000"], "serve",
                        ["argument --max-pixels", "from 1 to 1000000000", "3 bytes a pixel", "got 2000000000"]),
    "connections too many": (["serve", "--checkpoint", "m.pt", "--max-connections", "100000"], "serve",
                             ["argument --max-connections", "from 1 to 10000", "file descriptor", "got 100000"]),
    "opset too old": (["export", "--checkpoint", "m.pt", "--output", "m.onnx", "--opset", "11"], "export",
                      ["argument --opset", "from 18 to 23", "got 11"]),
    "jobs not a number": (["benchmark", "--root", "r", "--jobs", "many"], "benchmark",
                          ["argument --jobs", "from 1 to 256", "'many'"]),
    "unknown option": (["test", "--checkpoint", "m.pt", "--output", "o", "--colour", "red"], "test",
                       ["unrecognized arguments: --colour red"]),
    "unknown option of train": (["train", "--root", "r", "--output", "o", "--colour", "red"], "train",
                                ["unrecognized arguments: --colour;"]),
    "missing value": (["calibrate", "--checkpoint"], "calibrate", ["argument --checkpoint: expected one argument"]),
    "missing value at the end": (["test", "--output", "o", "--checkpoint"], "test",
                                 ["argument --checkpoint: expected one argument", "model.pt"]),
    "missing required option": (["export", "--checkpoint", "m.pt"], "export", ["required", "--output"]),
    "bad choice": (["train", "--root", "r", "--preset", "fastest"], "train",
                   ["argument --preset: invalid choice: 'fastest'", "cpu"]),
    "unknown command": (["trian"], "", ["invalid choice: 'trian'", "train"]),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_an_option_error_is_one_line(case, capsys):
    argv, command, fragments = OPTION_CASES[case]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    prog = f"scgan {command}".strip()
    line = _assert_one_error_line(e.value.code, captured.err, command, *fragments) if command else \
        captured.err.strip()
    assert line.startswith(f"{prog}: error: ") and len(captured.err.strip().splitlines()) == 1, captured.err
    assert e.value.code == 2 and captured.out == "" and "usage:" not in captured.err
    assert line.endswith(f"see '{prog} --help'")


@pytest.mark.unit
def test_the_opset_range_is_what_the_installed_exporter_writes():
    pytest.importorskip("onnxscript")
    from torch.onnx import _constants
    from torch.onnx._internal.exporter import _constants as exporter

    from scgan.utils.limits import EXPORT_OPSET

    assert (EXPORT_OPSET.low, EXPORT_OPSET.high) == (exporter.TORCHLIB_OPSET, _constants.ONNX_MAX_OPSET)


@pytest.mark.unit
@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["serve", "-h"]])
def test_help_still_prints_the_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: scgan") and "options:" in out


@pytest.mark.system
def test_subprocess_option_error_is_one_line(tmp_path):
    p = _scgan(["predict", "--checkpoint", "m.pt", "--output", "o", "--tile", "abc", "x.png"], tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["scgan predict: error: argument --tile: expected a positive integer, got 'abc'; "
                                     "see 'scgan predict --help'"]
