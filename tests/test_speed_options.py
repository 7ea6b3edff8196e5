"""Speed options: bf16-mixed training on CPU, channels_last and bf16 scoring, and the frozen D in G's step."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_config
from scgan.artifacts.model_file import load_model
from scgan.data.datasets import build_dataset
from scgan.models.scgan.networks import Discriminator
from scgan.models.scgan.scorer import Scorer, build_scorer
from scgan.models.scoring import autocast_dtype, score_loader
from scgan.training.fit import train


def _test_loader(cfg, batch: int = 8) -> DataLoader:
    d = cfg.data
    ds = build_dataset(d.dataset, d.root, d.category, split="test", spec=cfg.model.image_size)
    return DataLoader(ds, batch_size=batch, shuffle=False)


@pytest.mark.integration
def test_bf16_mixed_training_epoch_has_finite_losses(tmp_path, demo_root, demo_category):
    cfg = tiny_config(demo_root, demo_category, epochs=1, **{"runtime.precision": "bf16-mixed"})
    res = train(cfg, tmp_path, progress=False)
    rows = [r for r in csv.DictReader(open(tmp_path / "logs" / "metrics.csv")) if r.get("train/total")]
    assert rows, "no training losses were logged"
    for term in ("train/total", "train/enc", "train/con", "train/adv", "train/ssim", "train/d_loss"):
        values = [float(r[term]) for r in rows]
        assert all(math.isfinite(v) for v in values), (term, values)
    cal = load_model(res.model_path).calibration
    assert cal is not None and all(math.isfinite(s.threshold) for s in cal.scores.values())


@pytest.mark.integration
def test_run_without_options_is_exactly_forward(trained):
    loaded = load_model(trained[0].model_path)
    scorer = loaded.scorer()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        for a, b in zip(scorer(x), scorer.run(x)):
            assert torch.equal(a, b)


@pytest.mark.integration
def test_channels_last_scoring_matches_default(trained):
    res, cfg = trained
    loaded = load_model(res.model_path)
    plain = score_loader(loaded.scorer(), _test_loader(cfg))
    cl_cfg = tiny_config(cfg.data.root, cfg.data.category, **{"runtime.channels_last": True})
    scorer = build_scorer(cl_cfg, loaded.parts["generator"])
    assert scorer.channels_last  # build_scorer honours train.channels_last, or its own argument
    assert build_scorer(cfg, loaded.parts["generator"], channels_last=True).channels_last \
        and not loaded.scorer().channels_last
    fast = score_loader(scorer, _test_loader(cfg))
    np.testing.assert_allclose(fast.scores, plain.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.maps, plain.maps, rtol=1e-4, atol=1e-6)


@pytest.mark.integration
def test_channels_last_training_gives_the_same_scores(tmp_path, trained):
    """One run trained with channels_last, one without: same test scores up to float rounding."""
    res, cfg = trained
    cl = train(tiny_config(cfg.data.root, cfg.data.category, **{"runtime.channels_last": True}), tmp_path,
               progress=False)
    a = score_loader(load_model(res.model_path).scorer(), _test_loader(cfg))
    b = score_loader(load_model(cl.model_path).scorer(), _test_loader(cfg))
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-3, atol=1e-5)


@pytest.mark.integration
def test_bf16_scoring_is_close_and_keeps_fp32_outputs(trained):
    res, cfg = trained
    loaded = load_model(res.model_path)
    plain = score_loader(loaded.scorer(), _test_loader(cfg))
    scorer = build_scorer(loaded.config, loaded.parts["generator"], precision="bf16-mixed")
    assert scorer.autocast_dtype is torch.bfloat16
    x = next(iter(_test_loader(cfg)))["image"]
    with torch.inference_mode():
        s, m = scorer.run(x)
    assert s.dtype == torch.float32 and m.dtype == torch.float32  # the score head stays in fp32
    low = score_loader(scorer, _test_loader(cfg))
    assert np.isfinite(low.scores).all()
    np.testing.assert_allclose(low.scores, plain.scores, rtol=0.05, atol=1e-3)


@pytest.mark.unit
def test_autocast_dtype_names():
    assert autocast_dtype(None) is None and autocast_dtype("32-true") is None
    assert autocast_dtype("bf16-mixed") is torch.bfloat16 and autocast_dtype("16-mixed") is torch.float16
    with pytest.raises(ValueError, match="valid"):
        autocast_dtype("8-bit")
    assert Scorer(torch.nn.Identity()).autocast_dtype is None  # off by default


@pytest.mark.integration
def test_frozen_discriminator_in_generator_step_changes_no_number(tmp_path, demo_root, demo_category, monkeypatch):
    """Leaving D's weights out of G's backward skips work only: the trained weights are bitwise the same."""
    cfg = tiny_config(demo_root, demo_category, epochs=1)
    frozen = train(cfg, tmp_path / "frozen", progress=False)
    monkeypatch.setattr(Discriminator, "requires_grad_", lambda self, requires_grad=True: self)
    full = train(cfg, tmp_path / "full", progress=False)
    a = torch.load(frozen.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(full.last_checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert any(k.startswith("discriminator.") for k in a)
