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
               "patchcore.pad": 16, "patchcore.position_grid": 8, "eval_batch_size": 8, "model.image_size": 32,
               "model.base_channels": 8, "model.max_channels": 32, "model.nz": 16, "train.steps": 4,
               "train.batch_size": 8, "augment.n_patches": 5, "augment.patch_area": 0.02, "model.head": "none"}


def _config(demo_root, category, **overrides):
    from scgan.config import load_config

    return load_config("fusion", overrides={**TINY_FUSION, "data.root": str(demo_root), "data.category": category,
                                            **overrides})


@pytest.fixture(scope="module")
def fusion(tmp_path_factory, demo_root, demo_category):
    """A tiny fusion fitted on the demo object category: the loaded model. Its output folder held the parts folder
    of a fit killed before it could remove it."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train

    out = tmp_path_factory.mktemp("fusion")
    (out / ".fusion-parts-killed" / "restoration").mkdir(parents=True)
    res = train(_config(demo_root, demo_category), out, progress=False)
    return load_model(res.model_path)


def test_no_parts_folder_is_left_and_the_parts_facts_are_kept(fusion):
    assert not list(fusion.path.parent.glob(".fusion-parts-*"))
    meta = fusion.meta
    assert meta["features_default_score"] == "map_z"
    assert meta["restoration_default_score"] in _restoration_names(fusion)
    assert meta["features"]["bank_size"] > 0 and meta["restoration"]["global_step"] > 0 and meta["epoch"] == 2
    assert fusion.augmentation  # the SCGAN's augmentation, as its own model file says


def _restoration_names(fusion) -> tuple[str, ...]:
    from scgan.models.fusion.kind import part_config
    from scgan.models.scgan.kind import SCGAN

    return SCGAN.score_names(part_config(fusion.config, "restoration"))


def test_the_weights_point_at_each_models_default_score(fusion):
    from scgan.models.fusion.kind import part_config
    from scgan.models.patchcore.kind import PATCHCORE

    col = [int(c) for c in fusion.parts["fusion"].column]
    assert PATCHCORE.score_names(part_config(fusion.config, "features"))[col[0]] == "map_z"
    assert _restoration_names(fusion)[col[1]] == fusion.meta["restoration_default_score"]


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


def test_each_model_is_normalised_by_its_range_on_the_validation_images_through_the_fusions_graph(fusion):
    """The weights hold each model's default-score range on the normal validation images as the fused graph scores
    them: each model's normalised score then spans [0, 1] there exactly, so their mean lies in [0, 1], at most 0.5
    at the lowest image and at least 0.5 at the highest."""
    fused = fusion.calibration.scores["fused"]
    assert -1e-5 <= fused.min <= 0.5 + 1e-5 and 0.5 - 1e-5 <= fused.max <= 1.0 + 1e-5
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
    ({"patchcore.channels": "1"}, "patchcore.channels must be auto or 3"),
])
def test_settings_it_cannot_take_are_refused_in_one_line(demo_root, demo_category, override, words):
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=words):
        check_config(_config(demo_root, demo_category, **override))


@pytest.mark.parametrize("low, high", [(4.0, 4.0), (0.0, 2e-12), (1e3, 1e3 + 1e-5)])
def test_a_model_whose_score_or_map_does_not_vary_is_refused(low, high):
    """A model that gives every normal validation image the same score (or map) cannot be normalised: refused in one
    line, not fused with a span of nothing (which would make any image's fused score huge)."""
    from scgan.training.fusion import _span

    with pytest.raises(ValueError, match="same value on every normal validation image"):
        _span("restoration", "map", low, high)
    assert _span("features", "map", 0.0, 1e-3) == pytest.approx(1e-3)


@pytest.mark.parametrize("error, kept", [
    (RuntimeError("training diverged in epoch 2: the loss is nan; {folder}/last.ckpt: continue with --resume auto; "
                  "lower train.lr or check the data"), "training diverged in epoch 2: the loss is nan; lower train.lr"),
    ("disk", "No space left on device"),
    ("stopped", "training stopped by Ctrl-C"),
])
def test_a_part_that_fails_says_so_as_the_fusions_failure(tmp_path, error, kept):
    """The part's own message points at its temporary folder and at --resume; the fusion's says what happened,
    keeps the part's other advice, and exits as the part would have (130 for Ctrl-C)."""
    from scgan.training.fusion import FusionPartError, _fit_part
    from scgan.utils.atomic import DiskFullError

    folder = tmp_path / ".fusion-parts-x" / "restoration"
    folder.parent.mkdir()
    stopped = RuntimeError("training stopped by Ctrl-C; continue with --resume auto")
    stopped.exit_code = 130
    made = {"disk": DiskFullError(28, f"No space left on device; then continue with --resume auto ({folder})"),
            "stopped": stopped}.get(error) or RuntimeError(str(error).format(folder=folder))

    def fails(cfg, where):
        raise made

    with pytest.raises(FusionPartError) as caught:
        _fit_part("restoration", fails, None, folder)
    text = str(caught.value)
    assert f"fusion's restoration model did not finish ({kept}" in text
    assert "--resume auto" not in text and str(folder) not in text
    assert caught.value.exit_code == (130 if error == "stopped" else 1) and caught.value.__cause__ is made


def test_the_features_weights_are_its_own_calibrations_rule(fusion, tmp_path):
    """Through the fused graph the PatchCore detector sees exactly what it sees alone, so its weights are what its
    own calibration holds: the default score's validation range and the heat range (fitted alone, same seed)."""
    from scgan.artifacts.model_file import load_model
    from scgan.calibration.stats import HEAT_AT_THRESHOLD
    from scgan.models.fusion.kind import part_config
    from scgan.training.fit import train

    alone = load_model(train(part_config(fusion.config, "features"), tmp_path / "alone", progress=False).model_path)
    w, stats = fusion.parts["fusion"], alone.calibration.scores["map_z"]
    low, high = alone.calibration.heat_range()
    assert float(w.score_low[0]) == pytest.approx(stats.min, rel=1e-5)
    assert float(w.score_span[0]) == pytest.approx(stats.max - stats.min, rel=1e-4)
    assert float(w.map_low[0]) == pytest.approx(low, rel=1e-5)
    assert float(w.map_span[0]) == pytest.approx(high - low, rel=1e-4)
    assert (high - low) == pytest.approx((alone.calibration.heat_threshold - low) / HEAT_AT_THRESHOLD)


def test_a_model_whose_score_moved_is_refused_not_fused_on_the_wrong_column(fusion, tmp_path):
    import copy

    from scgan.artifacts.model_file import CheckpointError, load_model, save_model

    weights = copy.deepcopy(fusion.parts["fusion"])
    weights.score_names = ("map_max", weights.score_names[1])
    path = save_model(tmp_path / "model.pt", fusion.config, {**fusion.parts, "fusion": weights}, fusion.calibration)
    with pytest.raises((CheckpointError, ValueError), match="fused on its score 'map_max' at column"):
        load_model(path).scorer()


def test_update_refuses_it_and_tiles_warn_without_map_zs_advice(fusion, caplog):
    from scgan.inference.detector import Detector
    from scgan.training.update import check_updatable

    with pytest.raises(ValueError, match="cannot take new images"):
        check_updatable(fusion)
    with caplog.at_level("WARNING", logger="scgan"):
        Detector.load(fusion.path, tile=64)
    assert "fused judges each place" in caplog.text and "map_max does not depend" not in caplog.text


def test_the_restorations_input_is_close_to_pillows_resize_of_the_file(fusion):
    """The SCGAN was trained on files resized by Pillow to S x S; in the fusion it takes the PatchCore detector's input
    brought down by antialiased bilinear resizing. For files larger than both (the demo's test images at 128 px),
    the two differ on average by less than half what moving Pillow's image by one pixel changes
    (benchmarks/fusion_resize_gap.py measures real files)."""
    from PIL import Image

    from scgan.data.datasets import dataset_for
    from scgan.data.io import image_to_array, prepare_image

    test = dataset_for(fusion.config.data, "test", fusion.input_spec)
    size = fusion.config.model.image_size
    scorer = fusion.scorer()
    gaps = []
    for path in [s.path for s in test.samples][:6]:
        rgb = np.asarray(Image.open(path).convert("RGB").resize((128, 128), Image.Resampling.BICUBIC))
        ours = scorer.small(torch.from_numpy(image_to_array(prepare_image(rgb, fusion.input_spec))[None]))
        pillow = torch.from_numpy(image_to_array(prepare_image(rgb, size))[None])
        shifted = float((pillow[..., 1:] - pillow[..., :-1]).abs().mean())
        gaps.append(float((ours - pillow).abs().mean()) / shifted)
    assert max(gaps) < 0.5, gaps
