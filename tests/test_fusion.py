"""The fusion preset: the PatchCore detector and the SCGAN in one model file and one graph. Fitted on the demo data
at a tiny size, it scores as the mean of its two models' normalised scores and maps, exports to ONNX within the
parity tolerance, is tested like any model, and refuses what it cannot do."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.integration

# Both models small enough to fit in seconds (the restoration model without its head: a head trained a few steps
# gives every image the same map, which the fusion refuses to normalise; tested below).
TINY_FUSION = {"patchcore.resolution": 64, "patchcore.bank_size": 256, "patchcore.max_patches": 20_000,
               "patchcore.pad": 16, "patchcore.position_grid": 0, "eval_batch_size": 8, "model.image_size": 32,
               "model.base_channels": 8, "model.max_channels": 32, "model.nz": 16, "train.steps": 4,
               "train.batch_size": 8, "augment.n_patches": 5, "augment.patch_area": 0.02, "model.head": "none"}


def _config(demo_root, category, **overrides):
    from scgan.config import load_config

    return load_config("fusion", overrides={**TINY_FUSION, "data.root": str(demo_root), "data.category": category,
                                            **overrides})


@pytest.fixture(scope="module")
def fusion(tmp_path_factory, demo_root, demo_category):
    """A tiny fusion fitted on the demo object category: the loaded model."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train

    res = train(_config(demo_root, demo_category), tmp_path_factory.mktemp("fusion"), progress=False)
    return load_model(res.model_path)


@pytest.fixture(scope="module")
def images(fusion):
    """Four demo test images at the fusion's input, float32 (4, C, H, W) in [-1, 1], normal and defective."""
    from scgan.data.datasets import dataset_for

    test = dataset_for(fusion.config.data, "test", fusion.input_spec)
    idx = np.linspace(0, len(test) - 1, 4).round().astype(int)
    assert len({int(test.labels[i]) for i in idx}) == 2
    return torch.stack([test[int(i)]["image"] for i in idx])


def test_the_preset_is_the_default_and_scgan_presets_side_by_side():
    from scgan.config import get_preset

    fusion, default, scgan = get_preset("fusion"), get_preset("default"), get_preset("scgan")
    assert fusion.kind == "fusion" and fusion.score.default_score == "fused"
    assert fusion.patchcore == default.patchcore
    assert all(fusion.sections[s] == scgan.sections[s] for s in ("model", "loss", "augment", "train"))
    assert fusion.score.threshold_source == "validation" and fusion.score.sigma is None


def test_the_fused_score_and_map_are_the_mean_of_each_models_normalised_ones(fusion, images):
    from scgan.models.fusion.kind import part_config
    from scgan.models.patchcore.kind import PATCHCORE
    from scgan.models.scgan.kind import SCGAN

    parts, w = fusion.parts, fusion.parts["fusion"]
    features = PATCHCORE.build_scorer(part_config(fusion.config, "features"), {"memory": parts["memory"]})
    restoration = SCGAN.build_scorer(part_config(fusion.config, "restoration"), {"generator": parts["generator"]})
    size = fusion.config.model.image_size
    with torch.inference_mode():
        fs, fm = features(images)
        small = F.interpolate(images.expand(-1, 3, -1, -1), size=(size, size), mode="bilinear", antialias=True)
        rs, rm = restoration(small)
        scores, amap = fusion.scorer()(images)
    col = [int(c) for c in w.column]
    want = ((fs[:, col[0]] - w.score_low[0]) / w.score_span[0] + (rs[:, col[1]] - w.score_low[1]) / w.score_span[1]) / 2
    torch.testing.assert_close(scores[:, 0], want, rtol=1e-5, atol=1e-5)
    up = F.interpolate(rm[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
    want_map = ((fm - w.map_low[0]) / w.map_span[0] + (up - w.map_low[1]) / w.map_span[1]) / 2
    torch.testing.assert_close(amap, want_map, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores[:, 1], amap.flatten(1).amax(1))
    assert fusion.default_score == "fused" and fusion.score_names == ("fused", "map_max")


def test_each_model_is_normalised_by_its_own_calibration(fusion):
    """The weights hold each model's default-score range on the normal validation images: at the fit, those images'
    fused scores therefore fall in about [0, 1] (their normalised mean)."""
    cal = fusion.calibration
    assert 0.0 <= cal.scores["fused"].min and cal.scores["fused"].max <= 1.0 + 1e-5
    w = fusion.parts["fusion"]
    assert bool((w.score_span > 0).all()) and bool((w.map_span > 0).all())


def test_torch_and_onnx_agree_within_the_parity_tolerance(fusion, images, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.onnx_file import OnnxScorer, parity_gap

    path = export_onnx(fusion, tmp_path / "fusion.onnx")
    scores, maps = OnnxScorer(path).run(images.numpy())
    with torch.inference_mode():
        ts, tm = fusion.scorer()(images)
    assert parity_gap(scores, ts.numpy()) is None
    assert parity_gap(maps, tm.numpy()) is None


def test_scgan_test_reports_the_fused_score(fusion, tmp_path):
    from scgan.inference.evaluate import run_test

    metrics = run_test(fusion, tmp_path / "test", progress=False, report=False).metrics
    assert metrics["default_score"] == "fused"
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0


@pytest.mark.parametrize("override, words", [
    ({"score.sigma": 2}, "score.sigma must be null"),
    ({"score.threshold_source": "crossfit"}, "threshold_source = crossfit"),
    ({"score.default_score": "map_z"}, "not a score of this model"),
    ({"patchcore.layers": [99]}, "patchcore.layers"),
])
def test_settings_it_cannot_take_are_refused_in_one_line(demo_root, demo_category, override, words):
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=words):
        check_config(_config(demo_root, demo_category, **override))


def test_a_model_whose_score_does_not_vary_is_refused(fusion):
    """A restoration model that gives every normal image the same score cannot be normalised: refused in one line,
    not fused with a span of nothing (which would make any image's fused score huge)."""
    import dataclasses

    from scgan.training.fusion import _normalising

    name = fusion.default_score
    flat = dataclasses.replace(fusion.calibration.scores[name], max=fusion.calibration.scores[name].min)
    cal = dataclasses.replace(fusion.calibration, scores={**fusion.calibration.scores, name: flat})
    with pytest.raises(ValueError, match="same value on every normal validation image"):
        _normalising("restoration", dataclasses.replace(fusion, calibration=cal))


def test_weights_out_of_range_are_refused_on_load(fusion, tmp_path):
    import copy

    from scgan.artifacts.model_file import CheckpointError, load_model, save_model

    weights = copy.deepcopy(fusion.parts["fusion"])
    weights.score_span[1] = 0.0
    path = save_model(tmp_path / "model.pt", fusion.config, {**fusion.parts, "fusion": weights}, fusion.calibration)
    with pytest.raises((CheckpointError, ValueError), match="positive and finite"):
        load_model(path)
