"""What one training step does with each loss choice: -log D(x^), feature matching, the restoration target,
and the re-initialisation of a collapsed discriminator. Each run trains the tiny demo model in-process."""
from __future__ import annotations

import copy
import csv
import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import scgan.training.module as module_mod
from conftest import tiny_config
from scgan.artifacts.model_file import load_model
from scgan.models.scgan.networks import build_discriminator, init_weights
from scgan.training.datamodule import SCGANDataModule
from scgan.training.fit import train
from scgan.training.gan import prepare_run
from scgan.utils.seed import seeded_generator

pytestmark = pytest.mark.integration


class _FirstBatch(L.Callback):
    """Keeps the first training batch and the networks as they were before it; stops after ``steps`` steps."""

    def __init__(self, steps: int = 1) -> None:
        self.steps, self.batch, self.before = steps, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.batch = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
            self.before = copy.deepcopy(pl_module.state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.steps - 1:
            trainer.should_stop = True


def _steps(cfg, tmp_path, steps: int = 1):
    """Run ``steps`` training steps of the package's own set-up (no validation): (module, _FirstBatch)."""
    probe = _FirstBatch(steps)
    run = prepare_run(cfg, tmp_path, progress=False, callbacks=[probe], enable_logging=False)
    run.trainer.limit_val_batches = 0
    run.trainer.fit(run.module, datamodule=run.datamodule)
    return run.module, probe


def _record(monkeypatch, name: str) -> list:
    """Wrap scgan.training.module's ``name`` so that each call's arguments and result are kept."""
    calls: list = []
    fn = getattr(module_mod, name)

    def wrapper(*args):
        out = fn(*args)
        calls.append((args, out))
        return out

    monkeypatch.setattr(module_mod, name, wrapper)
    return calls


def _generator_state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.generator.state_dict().items()}


def test_bce_is_minus_log_d_of_the_restoration_and_moves_g_unlike_feature_matching(tmp_path, demo_root,
                                                                                   demo_category, monkeypatch):
    """One step each, same seed, data and batch: with bce G's adversarial term is -log sigmoid(D(x^)) (mean),
    computed without D(x); feature matching uses D(x) and moves G's weights elsewhere."""
    after, calls = {}, {}
    for adv in ("bce", "feature"):
        calls[adv] = _record(monkeypatch, "adversarial_term")
        module, probe = _steps(tiny_config(demo_root, demo_category, **{"loss.adv_type": adv}), tmp_path / adv)
        after[adv] = _generator_state(module)
        monkeypatch.undo()
    (adv_type, real, fake), value = calls["bce"][0]
    assert adv_type == "bce" and real is None  # -log D(x^) needs no D(x) in G's step
    logit = fake.logit.detach().float()
    assert value.item() == pytest.approx(-torch.log(torch.sigmoid(logit)).mean().item(), rel=1e-5)
    (adv_type, real, fake), value = calls["feature"][0]
    assert adv_type == "feature" and real is not None
    assert value.item() == pytest.approx(F.mse_loss(fake.features.float(), real.features.float()).item(), rel=1e-5)

    before = {k[len("generator."):]: v for k, v in probe.before.items() if k.startswith("generator.")}
    weights = [k for k in before if k.endswith("weight")]
    assert all(not torch.equal(after["bce"][k], before[k]) for k in weights)  # one step moved every weight
    same = {k for k in weights if torch.equal(after["bce"][k], after["feature"][k])}
    # L_adv depends on x^ only, so it never reaches encoder2's weights (trained by L_enc alone); encoder1 and
    # the decoder move differently. (Adam's first step is lr * sign(grad), so a tensor whose gradient signs
    # happen to agree under both losses moves the same: hence "most", not "all".)
    e2 = {k for k in weights if k.startswith("encoder2.")}
    assert e2 and e2 <= same
    rest = [k for k in weights if k not in e2]
    assert len(same - e2) <= len(rest) // 5, sorted(same - e2)


@pytest.mark.parametrize("target", ["clean", "augmented"])
def test_contextual_loss_compares_with_the_configured_target(tmp_path, demo_root, demo_category, monkeypatch,
                                                             target):
    """L_con = mean |x^ - x| (clean) or mean |x^ - x~| (augmented), x~ the CopyPaste image G was given."""
    calls = _record(monkeypatch, "generator_loss")
    cfg = tiny_config(demo_root, demo_category, **{"loss.con_target": target})
    module, probe = _steps(cfg, tmp_path)
    (out, used_target, _adv, _weights), loss = calls[0]
    x = probe.batch["image"]
    # The same augmentation of the same batch, drawn again from its seeded generator (epoch 0, batch 0, rank 0).
    x_aug = module.augment(x, generator=seeded_generator(x.device, cfg.seed, 0, 0, 0))
    assert not torch.equal(x_aug, x)  # patches were pasted
    expected = x_aug if target == "augmented" else x
    torch.testing.assert_close(used_target, expected, rtol=0, atol=0)
    hand = (out.x_hat.detach().float() - expected).abs().mean()
    assert loss.con.item() == pytest.approx(hand.item(), rel=1e-6)
    other = x if target == "augmented" else x_aug
    assert abs(loss.con.item() - (out.x_hat.detach().float() - other).abs().mean().item()) > 1e-6


def test_collapsed_discriminator_is_reinitialised_and_training_goes_on(tmp_path, trained):
    """d_reset_threshold above any loss: D is re-initialised after every step (each reset counted), from a
    seeded fresh start, and training still completes with finite losses and a calibration."""
    _, base = trained  # the same tiny run with the default threshold (1e-5): D never collapsed there
    cfg = tiny_config(base.data.root, base.data.category, epochs=1, **{"train.d_reset_threshold": 1e9})
    res = train(cfg, tmp_path, progress=False)
    ckpt = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)
    steps = len(SCGANDataModule(cfg).train_dataloader())
    assert steps >= 2 and res.epochs == 1
    assert ckpt["scgan_d_resets"] == steps  # one reset per step, counted
    assert json.loads((res.output_dir / "train_summary.json").read_text())["d_resets"] == steps
    rows = [r for r in csv.DictReader(open(res.output_dir / "logs" / "metrics.csv")) if r.get("train/total")]
    assert [r["epoch"] for r in rows] == ["0"] and math.isfinite(float(rows[0]["train/total"]))
    assert float(rows[0]["train/d_resets"]) == steps
    assert load_model(res.model_path).calibration is not None
    # D as left by the last step is a seeded fresh initialisation, not a trained network.
    reset_d = {k[len("discriminator."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("discriminator.")}
    fresh = build_discriminator(cfg.model)
    matches = []
    for offset in range(0, 4 * steps + 1):  # the reset's seed is train.seed + the global step it happened at
        init_weights(fresh, torch.Generator().manual_seed(cfg.seed + offset))
        if all(torch.equal(v, reset_d[k]) for k, v in fresh.state_dict().items() if k.endswith("weight")):
            matches.append(offset)
    assert matches, "the final D is not a seeded re-initialisation"
    base_ckpt = torch.load(trained[0].last_checkpoint, map_location="cpu", weights_only=True)
    assert base_ckpt["scgan_d_resets"] == 0
    base_d = {k[len("discriminator."):]: v for k, v in base_ckpt["state_dict"].items()
              if k.startswith("discriminator.")}
    assert any(not torch.equal(base_d[k], reset_d[k]) for k in base_d if k.endswith("weight"))


def test_lr_milestones_step_every_optimiser_down_by_epoch(tmp_path, demo_root, demo_category):
    """train.lr_milestones = [0.5] over 2 epochs: lr during epoch 0, lr * lr_gamma during epoch 1, for G, D and
    the head alike (checked with the optimisers' state in the last checkpoint)."""
    from scgan.config import TrainConfig

    t = TrainConfig(lr_milestones=[0.8, 0.9], lr_gamma=0.5)
    assert [t.lr_factor(e, 10) for e in (0, 7, 8, 9)] == [1.0, 1.0, 0.5, 0.25]
    assert [TrainConfig(lr_milestones=[0.07]).lr_factor(e, 100) for e in (6, 7)] == [1.0, 0.2]  # int(7.000...01)
    assert TrainConfig().lr_factor(9, 10) == 1.0  # no milestones: a constant lr, as in the paper
    cfg = tiny_config(demo_root, demo_category, **{"train.lr_milestones": [0.5], "train.lr_gamma": 0.1,
                                                   "model.head": "seg", "model.head_width": 4,
                                                   "train.checkpoint_every": 1})
    res = train(cfg, tmp_path, progress=False)

    def lrs(path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return [g["lr"] for state in ckpt["optimizer_states"] for g in state["param_groups"]]

    assert lrs(res.last_checkpoint.parent / "epoch0000.ckpt") == pytest.approx([cfg.train.lr] * 3)
    assert lrs(res.last_checkpoint) == pytest.approx([cfg.train.lr * 0.1] * 3)
