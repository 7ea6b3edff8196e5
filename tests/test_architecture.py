"""Boundaries of the package: inference without Lightning, each weight stored once, old files still read,
the paper preset exactly SPEC, and losses in fp32 under autocast."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scgan.artifacts.model_file import load_model
from scgan.config import get_preset


@pytest.mark.system
def test_inference_imports_no_lightning(trained, tmp_path):
    """load_model, the scorer, test and predict run in a fresh interpreter without importing Lightning."""
    res, cfg = trained
    code = (
        "import sys, scgan\n"
        "from scgan.inference.evaluate import run_test\n"
        "from scgan.inference.predict import run_predict\n"
        f"m = scgan.load_model({str(res.model_path)!r}); s = m.scorer()\n"
        f"run_test(m, {str(tmp_path / 'test')!r}, report=False, progress=False)\n"
        "mods = sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "print('LIGHTNING', mods)\n"
        "assert not mods, mods\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LIGHTNING []" in out.stdout


@pytest.mark.integration
def test_lightning_checkpoint_holds_each_weight_once(trained):
    res, _ = trained
    state = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"generator", "discriminator"}, prefixes
    g = sum(1 for k in state if k.startswith("generator."))
    assert g == len(load_model(res.model_path).parts["generator"].state_dict())


@pytest.mark.integration
def test_model_files_of_the_previous_layout_still_load(trained, tmp_path):
    """A format-1 model file (runtime settings in train/data/score, no head or output_scale) loads, scores the
    same, and keeps its old behaviour (plain Tanh)."""
    res, _ = trained
    obj = torch.load(res.model_path, map_location="cpu", weights_only=True)
    cfg = obj["config"]
    old = {**cfg, "model": {k: v for k, v in cfg["model"].items() if k not in ("output_scale", "head", "head_width",
                                                                              "head_depth")},
           "train": {**cfg["train"], "precision": "32-true", "accelerator": "cpu", "devices": 1, "strategy": "auto",
                     "channels_last": False, "sync_batchnorm": False},
           "data": {**cfg["data"], "num_workers": 0}, "score": {**cfg["score"], "eval_batch_size": 8}}
    old.pop("runtime", None)
    path = tmp_path / "v1.pt"
    v1 = {k: v for k, v in obj.items() if k not in ("parts", "kind", "input")}
    torch.save({**v1, "format_version": 1, "config": old, "generator": obj["parts"]["generator"]}, path)
    a, b = load_model(res.model_path), load_model(path)
    assert b.config.model.output_scale == 1.0 and b.config.model.head == "none"
    assert b.config.runtime.eval_batch_size == 32  # runtime is not read from a model file
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    b.parts["generator"].decoder.output_scale = a.config.model.output_scale  # same weights, same scale: same scores
    with torch.inference_mode():
        assert torch.allclose(a.scorer()(x)[0], b.scorer()(x)[0])


@pytest.mark.integration
def test_model_files_older_than_a_score_still_test(trained, tmp_path):
    """A model calibrated before a score existed (ssim_max, msgms_max came later) is tested on every score; the
    ones its calibration lacks get an AUROC but no decision at a threshold."""
    from scgan.inference.evaluate import run_test

    res, _ = trained
    obj = torch.load(res.model_path, map_location="cpu", weights_only=True)
    cal = obj["calibration"]
    kept = {k: v for k, v in cal["scores"].items() if k not in ("ssim_max", "msgms_max")}
    path = tmp_path / "older.pt"
    torch.save({**obj, "calibration": {**cal, "scores": kept}}, path)
    m = run_test(load_model(path), tmp_path / "test", report=False, progress=False).metrics
    assert {"ssim_max", "msgms_max"} <= set(m["scores"])
    assert "at_threshold" not in m["scores"]["ssim_max"] and "at_threshold" in m["scores"][m["default_score"]]
    # The calibration plays no part in an AUROC: the scores it lacks rank the images as the current file's do.
    # (Their level says nothing here: 4 steps of training leave ssim_max near chance, 0.3-0.8 over seeds.)
    current = run_test(load_model(res.model_path), tmp_path / "current", report=False, progress=False).metrics
    for name in ("ssim_max", "msgms_max"):
        assert m["scores"][name]["image_auroc"] == current["scores"][name]["image_auroc"], name


@pytest.mark.unit
def test_old_runtime_keys_are_read_at_their_new_place():
    from scgan.config import load_config

    cfg = load_config("cpu", overrides={"train.precision": "bf16-mixed", "score.eval_batch_size": 4})
    assert cfg.runtime.precision == "bf16-mixed" and cfg.runtime.eval_batch_size == 4


@pytest.mark.unit
def test_paper_preset_is_spec():
    p = get_preset("paper")
    assert p.loss.adv_type == "bce"  # L_adv = -log D(x^)
    assert (p.loss.w_enc, p.loss.w_con, p.loss.w_adv, p.loss.w_ssim) == (1, 40, 1, 40)
    assert p.model.image_size == 256 and p.model.max_channels is None and p.model.output_scale == 1.0
    assert p.model.head == "none" and p.augment.name == "auto" and p.augment.n_patches == 30
    assert (p.train.epochs, p.train.batch_size, p.train.lr, p.train.beta1) == (400, 64, 2e-4, 0.5)
    assert p.model.beta == 0.8


@pytest.mark.unit
@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true", "fp8"])
def test_precisions_that_would_calibrate_in_half_precision_are_refused(precision):
    from scgan.config import load_config

    with pytest.raises(ValueError, match="precision must be one of"):
        load_config("cpu", overrides={"precision": precision})


def _demo_batch(n: int = 4, size: int = 64) -> torch.Tensor:
    import numpy as np

    from scgan.data.demo import _render

    rng = np.random.default_rng(0)
    imgs = [torch.from_numpy(_render("washer", "good", size, rng)[0]).permute(2, 0, 1) for _ in range(n)]
    return torch.stack(imgs).float() / 127.5 - 1


@pytest.mark.unit
def test_losses_under_bf16_autocast_match_fp32():
    """SSIM's E[x^2] - mu^2 cancels in bf16: losses are computed in fp32 under any autocast."""
    from scgan.models.scgan.losses import ssim_loss

    x = _demo_batch()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    x_hat = (x + noise).clamp(-1, 1)

    def loss_and_grad(autocast: bool):
        leaf = x_hat.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            inp = leaf.to(torch.bfloat16) if autocast else leaf  # what a network under autocast returns
            loss = ssim_loss(inp, x)
        loss.backward()
        return loss.detach().float(), leaf.grad.flatten()

    l32, g32 = loss_and_grad(False)
    l16, g16 = loss_and_grad(True)
    assert l16.dtype == torch.float32
    assert abs(l16.item() - l32.item()) < 1e-3
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0).item() > 0.99


@pytest.mark.integration
def test_calibrate_refits_on_new_normal_images_and_changes_nothing_else(trained, tmp_path, demo_root, demo_category):
    from scgan.cli import main

    res, cfg = trained
    normal = demo_root / demo_category / "train" / "good"
    a, b = tmp_path / "q90.pt", tmp_path / "q99.pt"
    assert main(["calibrate", "--checkpoint", str(res.model_path), "--normal", str(normal), "--output", str(a),
                 "threshold_quantile=0.9"]) == 0
    assert main(["calibrate", "--checkpoint", str(res.model_path), "--normal", str(normal), "--output", str(b),
                 "threshold_quantile=0.99"]) == 0
    ma, mb, orig = load_model(a), load_model(b), load_model(res.model_path)
    n = len(list(normal.glob("*.png")))
    assert ma.calibration.n_images == mb.calibration.n_images == n != orig.calibration.n_images
    name = ma.default_score
    assert ma.calibration.scores[name].threshold < mb.calibration.scores[name].threshold
    # Same statistics apart from the threshold, the same weights, the same config but for the quantile.
    assert ma.calibration.scores[name].mean == mb.calibration.scores[name].mean
    for k, v in orig.parts["generator"].state_dict().items():
        assert torch.equal(v, ma.parts["generator"].state_dict()[k])
    da, db = ma.config.to_dict(), mb.config.to_dict()
    assert da["score"].pop("threshold_quantile") == 0.9 and db["score"].pop("threshold_quantile") == 0.99
    assert da == db
    do = orig.config.to_dict()
    do["score"].pop("threshold_quantile")
    assert da == do


@pytest.mark.integration
def test_calibrate_refuses_settings_that_need_training(trained, tmp_path, demo_root, demo_category):
    from scgan.commands.calibrate import recalibrate

    res, _ = trained
    with pytest.raises(ValueError, match="cannot change without fitting a scgan model again"):
        recalibrate(res.model_path, demo_root / demo_category / "train" / "good", tmp_path / "x.pt",
                    {"image_size": 64})
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.unit
def test_16_mixed_lets_gradscaler_skip_a_few_nonfinite_steps_then_stops(demo_root, demo_category):
    from conftest import tiny_config
    from scgan.training.module import MAX_SKIPPED_STEPS, NonFiniteLossError, SCGANModule

    bad = {"generator/total": torch.tensor(float("inf")), "generator/con": torch.tensor(1.0)}
    m = SCGANModule(tiny_config(demo_root, demo_category, precision="16-mixed").to_dict(), "copypaste")
    assert m._check_finite({"generator/con": torch.tensor(1.0)}, 0)
    for _ in range(MAX_SKIPPED_STEPS):
        assert not m._check_finite(bad, 0)  # one count per step, not per term
    assert m.skipped_steps == MAX_SKIPPED_STEPS
    with pytest.raises(NonFiniteLossError, match="generator/total became inf"):
        m._check_finite(bad, 0)
    fp32 = SCGANModule(tiny_config(demo_root, demo_category).to_dict(), "copypaste")
    with pytest.raises(NonFiniteLossError):
        fp32._check_finite(bad, 0)


@pytest.mark.integration
def test_fainter_synthetic_defects_change_the_same_pixels_less(trained, demo_root, demo_category):
    """The fitter scores confetti at each strength on the same pixels; the full-strength numbers are the
    ones a single-strength calibration gets."""
    import copy

    import torch
    from torch.utils.data import DataLoader

    from scgan.artifacts.model_file import load_model
    from scgan.data.datasets import normal_images
    from scgan.inference.calibrate import CalibrationFitter, calibrate

    res, _ = trained
    loaded = load_model(res.model_path)
    cfg = copy.deepcopy(loaded.config)
    cfg.score.default_score = "auto"
    ds = normal_images(demo_root / demo_category / "train" / "good", cfg.model.image_size)
    loader = DataLoader(ds, batch_size=8, shuffle=False)
    cfg.score.selection_strengths = [1.0]
    single = calibrate(loaded.scorer(), loader, cfg)
    cfg.score.selection_strengths = [1.0, 0.5, 0.25]
    ladder = calibrate(loaded.scorer(), loader, cfg)
    assert ladder.selection_by_strength["1"] == single.selection
    for n in single.selection:
        rows = [ladder.selection_by_strength[a][n] for a in ("1", "0.5", "0.25")]
        assert ladder.selection[n] == pytest.approx(sum(rows) / 3)
    # What the fitter pastes at strength a: the same pixels as at full strength, moved a of the way.
    fitter = CalibrationFitter(loaded.scorer(), cfg)
    x = next(iter(loader))["image"]
    seen = []
    fitter.scorer.run = lambda xa, raw=False: (seen.append(xa)
                                               or (torch.zeros(len(xa), len(fitter.scorer.names)), None))
    fitter.add(x, 0)
    full, half, quarter = (s - x for s in seen[1:])
    changed = full.abs().sum(1) > 0
    assert changed.any() and torch.equal(half.abs().sum(1) > 0, changed)
    assert torch.allclose(half, full / 2, atol=1e-6) and torch.allclose(quarter, full / 4, atol=1e-6)


@pytest.mark.integration
def test_model_files_of_format_2_still_load_and_score_identically(trained, tmp_path):
    """Format 2 kept the generator (and a head) at the top level, with no kind or input spec."""
    res, _ = trained
    obj = torch.load(res.model_path, map_location="cpu", weights_only=True)
    v2 = {k: v for k, v in obj.items() if k not in ("parts", "kind", "input")}
    torch.save({**v2, "format_version": 2, "generator": obj["parts"]["generator"]}, tmp_path / "v2.pt")
    a, b = load_model(res.model_path), load_model(tmp_path / "v2.pt")
    assert b.config.kind == "scgan" and b.input_spec == a.input_spec
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        sa, ma = a.scorer()(x)
        sb, mb = b.scorer()(x)
    assert torch.equal(sa, sb) and torch.equal(ma, mb)
