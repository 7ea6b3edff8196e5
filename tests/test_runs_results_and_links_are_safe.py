"""No run silently overwritten, no result reused across data, no NaN model,
no per-file problem losing other results, and no write through a planted symbolic link.

Each test is one guarantee of docs/reliability.md; training is the tiny demo configuration of conftest
(S = 32).
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import scgan.training.fit as fit
from conftest import TINY, tiny_config
from helpers import csv_rows, make_fake_mvtec, one_error_line, square_mask, write_image, write_mask
from scgan.artifacts.model_file import CheckpointError, load_model
from scgan.cli import main
from scgan.config import load_config
from scgan.experiments.studies import run_study
from scgan.inference.evaluate import run_test
from scgan.training.fit import train
from scgan.utils.atomic import writable_dir
from test_interruption_and_divergence import StepHook, _cli_args, _continue_from

pytestmark = pytest.mark.integration


def _copy_run(trained, dst: Path) -> Path:
    shutil.copytree(trained[0].output_dir, dst)
    return dst


# ---- 1. a run is never discarded without --overwrite ----------------------------------------------
def test_train_into_a_folder_holding_a_run_is_refused_and_overwrite_replaces_it(trained, tmp_path, capsys,
                                                                                 demo_root, demo_category):
    out = _copy_run(trained, tmp_path / "run")
    (out / "notes.txt").write_text("the user's own file")
    before = {p: (out / p).read_bytes() for p in ("checkpoints/last.ckpt", "logs/metrics.csv", "model.pt")}
    assert main(_cli_args(demo_root, demo_category, out, "epochs=1")) == 1
    line = one_error_line(capsys.readouterr().err, "train")
    assert "already holds a training run" in line and "checkpoints/last.ckpt" in line
    assert "--resume auto" in line and "--overwrite" in line
    assert {p: (out / p).read_bytes() for p in before} == before  # nothing touched

    assert main(_cli_args(demo_root, demo_category, out, "epochs=1", "--overwrite")) == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert {r["epoch"] for r in csv_rows(out / "logs" / "metrics.csv")} == {"0"}  # the old epochs 0-1 are gone
    assert load_model(out / "model.pt").meta["epoch"] == 1  # epochs trained (the old run had 2)
    assert (out / "notes.txt").read_text() == "the user's own file"  # only the run's files were deleted
    with pytest.raises(ValueError, match="only one of them"):
        train(tiny_config(demo_root, demo_category), out, resume="auto", overwrite=True)


# ---- 2. one lock per output folder ----------------------------------------------------------------
def test_second_training_into_a_folder_in_use_is_refused_and_the_lock_is_released(tmp_path, demo_root,
                                                                                   demo_category):
    cfg = tiny_config(demo_root, demo_category, epochs=1)
    out = tmp_path / "run"
    refusals = []

    def second_training(trainer, module) -> None:  # while the first one runs, in the same folder
        try:
            train(cfg, out, resume="auto", progress=False)
        except Exception as e:  # noqa: BLE001 — recorded for the assertions below
            refusals.append(e)

    train(cfg, out, progress=False, callbacks=[StepHook(2, second_training)])
    assert len(refusals) == 1, "the second training was not refused"
    msg = str(refusals[0])
    assert f"in use by pid {os.getpid()}" in msg and "\n" not in msg
    assert not (out / ".scgan.lock").exists()  # released after success

    with pytest.raises(RuntimeError, match="injected"):  # released after an exception too
        train(cfg, tmp_path / "crash", progress=False, callbacks=[StepHook(0, _raise)])
    assert not (tmp_path / "crash" / ".scgan.lock").exists()

    # A lock file left by a process that died (kill -9) is stale: the next run takes it over.
    from scgan.utils.lock import folder_lock

    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / ".scgan.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with folder_lock(stale, "training"):
        assert json.loads((stale / ".scgan.lock").read_text())["pid"] == os.getpid()
    # A link planted at the lock's name is refused, not followed.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (stale / ".scgan.lock").symlink_to(victim)
    with pytest.raises(RuntimeError, match="symbolic link"):
        train(cfg, stale, progress=False)
    assert victim.read_text() == "precious"


def _raise(trainer, module) -> None:
    raise RuntimeError("injected")


# ---- 3. results are never reused across data ------------------------------------------------------
def test_runs_are_keyed_by_the_data_and_a_reused_run_says_so(tmp_path, demo_root, demo_category, capsys):
    base = load_config("cpu", overrides={**TINY, "epochs": 1})
    other = tmp_path / "other_root"  # other images under the same category name
    shutil.copytree(demo_root, other)
    for p in sorted((other / demo_category / "train" / "good").iterdir())[:3]:
        p.unlink()

    def study(root: Path) -> dict:
        out = run_study("benchmark", base, dataset="mvtec", root=str(root), categories=[demo_category], seeds=[0],
                        results=tmp_path / "results", jobs=1, threads=1, progress=False)
        return json.loads((out / "summary.json").read_text())

    first, second = study(demo_root), study(other)
    run_a, run_b = first["runs"]["base"][demo_category][0], second["runs"]["base"][demo_category][0]
    assert run_a != run_b, "a run trained on another root was reused"
    assert second["reused_runs"] == []
    assert json.loads(Path(run_b, "train", "train_summary.json").read_text())["n_train"] < \
        json.loads(Path(run_a, "train", "train_summary.json").read_text())["n_train"]
    assert json.loads(Path(run_b, "run.json").read_text())["data"]["folder"] == str((other / demo_category).resolve())
    capsys.readouterr()
    third = study(demo_root)
    assert third["runs"]["base"][demo_category][0] == run_a and third["reused_runs"] == [run_a]
    assert f"reused (not retrained): {run_a}" in capsys.readouterr().out
    table = (tmp_path / "results" / "benchmark_mvtec" / "table.md").read_text()
    assert "runs reused from earlier invocations (not retrained): 1 of 1" in table


# ---- 4. no NaN model ------------------------------------------------------------------------------
class PoisonAfterLastStep(L.Callback):
    """Sets a generator weight to NaN after the last optimiser step of epoch ``epoch``: the losses stayed finite."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == trainer.num_training_batches - 1:
            with torch.no_grad():
                next(pl_module.generator.parameters()).fill_(float("nan"))


def test_diverged_last_step_writes_no_model_and_keeps_the_last_good_checkpoint(trained, tmp_path,
                                                                                   monkeypatch, capsys):
    out = tmp_path / "run"
    cfg, last = _continue_from(trained, out, epochs=3)
    good = last.read_bytes()
    monkeypatch.setattr(fit, "train", functools.partial(train, callbacks=[PoisonAfterLastStep(2)]))
    rc = main(_cli_args(Path(cfg.data.root), cfg.data.category, out, "epochs=3", "--resume", "auto"))
    line = one_error_line(capsys.readouterr().err, "train")
    assert rc == 1
    assert "diverged in epoch 2" in line and "nan" in line and "last.ckpt still holds the last good epoch" in line
    assert last.read_bytes() == good  # epoch 1's checkpoint, not the NaN one
    assert not (out / "model.pt").exists()


# ---- 5. per-file name problems never lose the other results (scgan test) --------------------------
def _odd_names_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = make_fake_mvtec(tmp_path / "odd", "bottle", n_train=4, n_good_test=2, defects={"broken": 1}, size=32)
    good = root / "bottle" / "test" / "good"
    names = {
        "latin1": os.fsdecode(b"caf\xe9.png"),  # not UTF-8: how Python keeps it on Linux
        "long": "x" * 240 + ".png",  # a 240-byte stem
        "formula": "=HYPERLINK(1).png",
    }
    for i, name in enumerate(names.values()):
        write_image(good / name, 32, seed=50 + i)
    return root, names


def test_test_scores_every_file_whatever_its_name(trained, tmp_path):
    res, _ = trained
    root, names = _odd_names_root(tmp_path)
    out = run_test(res.model_path, tmp_path / "out", root=str(root), category="bottle", progress=False)
    rows = csv_rows(out.output_dir / "scores.csv")
    assert len(rows) == 2 + 1 + len(names)  # every image has its row
    paths = [r["path"] for r in rows]
    assert any(p.endswith("caf\\xe9.png") for p in paths)  # escaped, readable as UTF-8
    assert any(p.endswith("x" * 240 + ".png") for p in paths)
    assert all(not p.startswith(("=", "+", "-", "@")) for p in paths)
    assert json.loads((out.output_dir / "metrics.json").read_text())["info"]["n_test"] == len(rows)
    assert (out.output_dir / "report.html").stat().st_size > 0


def test_csv_cells_that_start_like_formulas_are_defused(trained, tmp_path):
    res, _ = trained
    root = make_fake_mvtec(tmp_path / "f", "bottle", n_train=4, n_good_test=2, defects={"=cmd": 1}, size=32)
    out = run_test(res.model_path, tmp_path / "out", root=str(root), category="bottle", progress=False,
                   report=False)
    defects = {r["defect"] for r in csv_rows(out.output_dir / "scores.csv")}
    assert defects == {"good", "'=cmd"}


# ---- 6. small training sets: a usable validation split and a warning ------------------------------
def test_few_training_images_keep_several_for_calibration_and_warn(tmp_path, caplog):
    root = make_fake_mvtec(tmp_path / "few", "bottle", n_train=12, n_good_test=2, size=32)
    cfg = tiny_config(root, "bottle", epochs=1)
    with caplog.at_level("WARNING", logger="scgan"):
        res = train(cfg, tmp_path / "run", progress=False)
    n_val = load_model(res.model_path).calibration.n_images
    assert n_val >= 4, f"calibration on {n_val} image(s)"
    assert any(f"rests on {n_val} normal validation image(s)" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["n_val"] == n_val and "fewer than 20" in summary["calibration_warning"]
    metrics = run_test(res.model_path, tmp_path / "test", progress=False, report=False).metrics
    assert "fewer than 20" in metrics["calibration_warning"]


# ---- 7. text given to matplotlib is escaped -------------------------------------------------------
def test_dollar_signs_in_test_file_names_do_not_break_the_report(trained, tmp_path):
    res, _ = trained
    root = make_fake_mvtec(tmp_path / "d", "bottle", n_train=4, n_good_test=2, defects={}, size=32)
    write_image(root / "bottle" / "test" / "good" / "price$5_$000.png", 32, seed=7)
    m = square_mask(32, 0.3)
    write_image(root / "bottle" / "test" / "crack" / "a$b$c.png", 32, seed=8, mask=m)
    write_mask(root / "bottle" / "ground_truth" / "crack" / "a$b$c_mask.png", m)
    out = run_test(res.model_path, tmp_path / "out", root=str(root), category="bottle", progress=False)
    assert (out.output_dir / "report.html").stat().st_size > 0
    assert (out.output_dir / "examples_most.png").exists()


# ---- 8. the writable-folder probe never follows a link --------------------------------------------
def test_writable_probe_does_not_truncate_a_planted_link_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the old probe's predictable name
        (out / f".scgan-write-test-{pid}").symlink_to(victim)
    writable_dir(out)
    assert victim.read_text() == "precious"
    assert not [p for p in out.iterdir() if not p.is_symlink()]  # no probe left behind


# ---- 9. logs are written atomically, never through a planted link ---------------------------------
def test_training_logs_replace_planted_links_and_stale_temp_files_are_removed(trained, tmp_path):
    out = tmp_path / "run"
    cfg, last = _continue_from(trained, out, epochs=3)
    victims = {}
    (out / "logs").mkdir()
    for name in ("hparams.yaml", "metrics.csv"):
        victims[name] = tmp_path / f"victim_{name}"
        victims[name].write_text("precious")
        (out / "logs" / name).symlink_to(victims[name])
    stale = [out / ".model.pt.abcd1234.tmp", out / "checkpoints" / ".last.ckpt.zz99_zz9.tmp"]
    for p in stale:
        p.write_bytes(b"half a file from a killed writer")
    train(cfg, out, resume="auto", progress=False)
    assert all(v.read_text() == "precious" for v in victims.values())
    assert not (out / "logs" / "hparams.yaml").is_symlink() and "config" in (out / "logs" / "hparams.yaml").read_text()
    assert {r["epoch"] for r in csv_rows(out / "logs" / "metrics.csv") if r.get("train/total")} == {"2"}
    assert not any(p.exists() for p in stale)


# ---- minor ----------------------------------------------------------------------------------------
class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, f, room: int = 4096) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_disk_full_during_training_says_so_and_where(trained, tmp_path, monkeypatch):
    """torch.save itself reports ENOSPC as '[enforce fail at inline_container.cc] unexpected pos'."""
    out = tmp_path / "run"
    cfg, last = _continue_from(trained, out, epochs=3)
    previous = last.read_bytes()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, _FullDisk(f), *a, **k))
    with pytest.raises(OSError) as info:
        train(cfg, out, resume="auto", progress=False)
    msg = str(info.value)
    assert msg.startswith("the disk is full") and str(last) in msg and "--resume auto" in msg
    assert "enforce fail" not in msg and "\n" not in msg
    monkeypatch.undo()
    assert last.read_bytes() == previous


def test_test_output_names_its_model_and_no_report_removes_an_old_report(trained, tmp_path):
    res, _ = trained
    out = tmp_path / "out"
    run_test(res.model_path, out, progress=False)
    assert (out / "report.html").exists()
    (out / ".metrics.json.abcdefgh.tmp").write_text("left by kill -9")
    run_test(res.model_path, out, progress=False, report=False)
    assert not (out / "report.html").exists() and not (out / "report.md").exists()
    assert not (out / "roc.png").exists() and not (out / ".metrics.json.abcdefgh.tmp").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["metrics.json", "scores.csv"]
    assert manifest["model"]["path"] == str(res.model_path.resolve()) and len(manifest["model"]["sha256"]) == 64


def test_hand_corrupted_model_files_give_errors_naming_the_file(trained, tmp_path):
    res, _ = trained
    obj = torch.load(res.model_path, weights_only=True)
    for name, edit in (("no_n_images", lambda o: o["calibration"].pop("n_images")),
                       ("no_generator", lambda o: o.__setitem__("parts", {})),
                       ("bad_meta", lambda o: o.__setitem__("meta", 3))):
        broken = {**obj, "calibration": dict(obj["calibration"])}
        edit(broken)
        path = tmp_path / f"{name}.pt"
        torch.save(broken, path)
        with pytest.raises(CheckpointError, match=str(path)):
            load_model(path)


def test_exif_orientation_is_ignored_by_every_reader(tmp_path):
    """Documented in docs/data.md: pixels are used as stored; the EXIF orientation tag is not applied."""
    from scgan.data.io import load_image

    pixels = np.zeros((8, 16, 3), dtype=np.uint8)
    pixels[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "a.jpg", exif=exif, quality=100)
    img = load_image(tmp_path / "a.jpg", None)
    assert img.shape == (8, 16, 3) and img[:, :6].mean() > 200 and img[:, 10:].mean() < 50


def test_sigterm_prints_one_line(tmp_path, demo_root, demo_category):
    """A real `scgan train` process stopped by SIGTERM: one stderr line (Lightning's INFO lines are silenced)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    out = tmp_path / "run"
    args = _cli_args(demo_root, demo_category, out, "epochs=1000")
    p = subprocess.Popen([sys.executable, "-m", "scgan", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 128 + signal.SIGTERM
    assert "training stopped by SIGTERM" in one_error_line(err, "train")
