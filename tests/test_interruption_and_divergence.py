"""Interruption, divergence and crashes mid-write: nothing is lost, and every failure says what happened.

Faults are injected in-process: a Lightning callback raises, sends SIGTERM to this process, or poisons
a weight at a chosen global step; a monkeypatched ``torch.save`` / ``os.replace`` fails in the middle
of a file write. Training is the tiny demo configuration (S = 32, 2 epochs of 2 steps on 2 CPU cores);
with two optimiser steps per batch the global step is 4 * epoch + 2 * batch.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

import scgan.training.fit as fit
import scgan.training.gan as gan
import scgan.utils.atomic as atomic
from conftest import TINY, tiny_config
from scgan.artifacts.model_file import load_model, save_model
from scgan.cli import main
from scgan.inference.evaluate import run_test
from scgan.training.fit import train
from scgan.training.gan import AtomicCheckpointIO, TrainingStopped, build_trainer
from scgan.training.module import NonFiniteLossError

EPOCH1_BATCH0, EPOCH1_BATCH1 = 4, 6  # global steps inside the second epoch (the first has been checkpointed)


class StepHook(L.Callback):
    """Calls ``action(trainer, module)`` once, when a training batch starts at global step ``step``."""

    def __init__(self, step: int, action) -> None:
        self.step, self.action, self.fired = step, action, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.fired:
            self.fired = True
            self.action(trainer, pl_module)


def _crash(trainer, module) -> None:
    raise RuntimeError("injected crash")


def _sigterm(trainer, module) -> None:
    # Only with Lightning's handler installed: the default action would kill the test process.
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    os.kill(os.getpid(), signal.SIGTERM)


def _generator_state(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).parts["generator"].state_dict()


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def _metrics(model_path: Path, out: Path) -> dict:
    """metrics.json of run_test without its run information (paths, wall time, timestamps)."""
    run_test(model_path, out, progress=False, report=False)
    m = json.loads((out / "metrics.json").read_text())
    m.pop("info")
    return m


def _cli_args(root: Path, category: str, out: Path, *extra: str) -> list[str]:
    """`scgan train` with the tiny config, so it builds exactly tiny_config(root, category)."""
    return ["train", "--preset", "cpu", "--root", str(root), "--category", category, "--output", str(out),
            "--no-progress", *(f"{k}={v}" for k, v in TINY.items()), *extra]


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"


# ---- kill and resume ------------------------------------------------------------------------------
@pytest.mark.integration
def test_crash_mid_epoch_then_resume_gives_identical_weights_and_metrics(trained, tmp_path):
    res, cfg = trained  # the uninterrupted run, same config and seed
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, out, progress=False, callbacks=[StepHook(EPOCH1_BATCH1, _crash)])
    last = out / "checkpoints" / "last.ckpt"
    assert not (out / "model.pt").exists()
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # written at the end of epoch 0

    resumed = train(cfg, out, resume="auto", progress=False)
    assert json.loads((out / "train_summary.json").read_text())["resumed_from"] == str(last)
    _assert_same_weights(_generator_state(res.model_path), _generator_state(resumed.model_path))
    assert load_model(res.model_path).calibration.to_dict() == load_model(resumed.model_path).calibration.to_dict()
    assert _metrics(res.model_path, tmp_path / "ma") == _metrics(resumed.model_path, tmp_path / "mb")
    # The log keeps epoch 0 from before the crash (Lightning's CSV writer would delete it on resume).
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    assert {r["epoch"] for r in rows if r.get("train/total")} == {"0", "1"}
    assert len(rows) == len(list(csv.DictReader(open(res.output_dir / "logs" / "metrics.csv"))))


@pytest.mark.system
def test_sigterm_stops_the_cli_with_one_line_and_resume_matches(trained, tmp_path, demo_root, demo_category,
                                                                 monkeypatch, capsys):
    res, _ = trained
    out = tmp_path / "run"
    monkeypatch.setattr(fit, "train", functools.partial(train, callbacks=[StepHook(EPOCH1_BATCH0, _sigterm)]))
    assert main(_cli_args(demo_root, demo_category, out)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scgan train: error: training stopped by SIGTERM in epoch 1")
    assert "--resume auto" in lines[0] and "Traceback" not in err
    assert not (out / "model.pt").exists()

    monkeypatch.undo()
    assert main(_cli_args(demo_root, demo_category, out, "--resume", "auto")) == 0
    _assert_same_weights(_generator_state(res.model_path), _generator_state(out / "model.pt"))


# ---- seeds ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path, demo_root, demo_category):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        r = train(tiny_config(demo_root, demo_category, epochs=1, seed=seed), tmp_path / name, progress=False)
        runs[name] = (_generator_state(r.model_path), _metrics(r.model_path, tmp_path / f"m{name}"))
    _assert_same_weights(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1]
    assert runs["a"][1]["config"]["seed"] == 0 and runs["c"][1]["config"]["seed"] == 1
    assert runs["a"][1]["threshold"] != runs["c"][1]["threshold"]
    assert any(not torch.equal(v, runs["c"][0][k]) for k, v in runs["a"][0].items() if v.is_floating_point())


# ---- divergence -----------------------------------------------------------------------------------
def _continue_from(trained, out: Path, epochs: int = 3):
    """A copy of the trained run's checkpoints in ``out`` and its config with more epochs, to resume from."""
    res, cfg = trained
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes((res.output_dir / "checkpoints" / "last.ckpt").read_bytes())
    cfg = tiny_config(Path(cfg.data.root), cfg.data.category, epochs=epochs)
    return cfg, out / "checkpoints" / "last.ckpt"


@pytest.mark.integration
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    cfg, last = _continue_from(trained, tmp_path / "run")
    before = {"bytes": last.read_bytes(), "state": _generator_state(last)}

    def poison(trainer, module) -> None:
        with torch.no_grad():
            next(module.generator.parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError) as info:  # in the third epoch (2), at its second batch (1)
        train(cfg, tmp_path / "run", resume="auto", progress=False, callbacks=[StepHook(10, poison)])
    msg = str(info.value)
    assert "\n" not in msg and "nan" in msg
    assert "epoch 2" in msg and "step 1" in msg and "loss generator/" in msg  # epoch, batch, loss term
    assert last.read_bytes() == before["bytes"]
    _assert_same_weights(_generator_state(last), before["state"])
    assert not (tmp_path / "run" / "model.pt").exists()


# ---- atomic writes --------------------------------------------------------------------------------
def _half_then_fail(real_save):
    """A torch.save that writes half of the real bytes to its file, then fails like a full disk."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device (simulated)")

    return save


def _fail_rename_of(name: str, monkeypatch) -> None:
    """Make the final rename onto a file called ``name`` fail: a crash after the bytes, before the rename."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(5, f"simulated crash while replacing {name}")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "replace", replace)


@pytest.mark.integration
def test_save_model_crash_midway_keeps_the_previous_file(trained, tmp_path, monkeypatch):
    res, _ = trained
    path = tmp_path / "model.pt"
    path.write_bytes(res.model_path.read_bytes())
    loaded = load_model(path)
    with torch.no_grad():
        next(loaded.parts["generator"].parameters()).add_(1.0)  # a different model, which must not land
    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save))
    with pytest.raises(OSError, match="the disk is full"):
        save_model(path, loaded.config, loaded.parts, loaded.calibration, loaded.augmentation)
    monkeypatch.undo()
    assert path.read_bytes() == res.model_path.read_bytes()
    _assert_same_weights(_generator_state(path), _generator_state(res.model_path))
    _no_temp_files(tmp_path)


@pytest.mark.integration
def test_test_outputs_crash_during_write_keep_the_previous_files(trained, tmp_path, monkeypatch):
    res, _ = trained
    run_test(res.model_path, tmp_path, progress=False)
    for name in ("metrics.json", "scores.csv", "report.md", "report.html"):
        previous = (tmp_path / name).read_bytes()
        with monkeypatch.context() as m:
            _fail_rename_of(name, m)
            with pytest.raises(OSError, match="simulated crash"):
                run_test(res.model_path, tmp_path, progress=False)
        assert (tmp_path / name).read_bytes() == previous, name
        _no_temp_files(tmp_path)


@pytest.mark.integration
def test_lightning_checkpoints_are_written_atomically(trained, tmp_path, monkeypatch):
    """A failure mid-save of last.ckpt (half the bytes written) leaves the previous file loadable."""
    res, cfg = trained
    assert isinstance(build_trainer(cfg, tmp_path / "t", enable_logging=False).strategy.checkpoint_io,
                      AtomicCheckpointIO)
    path = tmp_path / "last.ckpt"
    path.write_bytes((res.output_dir / "checkpoints" / "last.ckpt").read_bytes())
    previous = path.read_bytes()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["epoch"] += 1
    monkeypatch.setattr(torch, "save", _half_then_fail(torch.save))
    with pytest.raises(OSError, match="the disk is full"):
        AtomicCheckpointIO().save_checkpoint(ckpt, path)
    monkeypatch.undo()
    assert path.read_bytes() == previous
    _assert_same_weights(_generator_state(path), _generator_state(res.output_dir / "checkpoints" / "last.ckpt"))
    _no_temp_files(tmp_path)


@pytest.mark.integration
def test_crash_while_training_saves_a_checkpoint_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    cfg, last = _continue_from(trained, tmp_path / "run")
    previous = last.read_bytes()
    _fail_rename_of("last.ckpt", monkeypatch)  # the end-of-epoch save fails after writing, before its rename
    with pytest.raises(OSError, match="simulated crash"):
        train(cfg, tmp_path / "run", resume="auto", progress=False)
    monkeypatch.undo()
    assert last.read_bytes() == previous
    assert load_model(last).meta["epoch"] == 1
    _no_temp_files(last.parent)


@pytest.mark.integration
def test_ctrl_c_before_any_checkpoint_says_there_is_nothing_to_resume(tmp_path, demo_root, demo_category):
    handler = signal.getsignal(signal.SIGINT)

    def ctrl_c(trainer, module) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingStopped) as info:  # Lightning alone would sys.exit(1) without a word
        train(tiny_config(demo_root, demo_category), tmp_path, progress=False, callbacks=[StepHook(2, ctrl_c)])
    assert info.value.exit_code == 130
    assert str(info.value).startswith("training stopped by Ctrl-C in epoch 0")
    assert "no checkpoint to resume from" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's "ignore Ctrl-C" is undone


@pytest.mark.unit
def test_resume_checks_the_network_and_reads_settings_added_later_as_their_default(tmp_path):
    """A checkpoint from before model.output_scale existed resumes with 1.0 and is refused with 1.1."""
    from scgan.artifacts.model_file import CheckpointError
    from scgan.config import load_config

    cfg = load_config("cpu", overrides=["output_scale=1.0"])
    old_model = {k: v for k, v in cfg.to_dict()["model"].items() if k != "output_scale"}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "epoch": 3, "hyper_parameters": {"config": {"model": old_model}}}, path)
    assert gan._checkpoint_epoch(path, cfg) == 3
    with pytest.raises(CheckpointError, match=r"output_scale=1.0 there, 1.1 here"):
        gan._checkpoint_epoch(path, load_config("cpu"))
    with pytest.raises(CheckpointError, match=r"another network \(image_size=64 there, 128 here"):
        gan._checkpoint_epoch(path, load_config("cpu", overrides=["output_scale=1.0", "image_size=128"]))
