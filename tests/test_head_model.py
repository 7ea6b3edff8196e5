"""A model with the learned anomaly head (model.head = seg): trained on the augmentation's masks, stored,
loaded, scored and exported like a head-less one."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from helpers import assert_normal_blue_threshold_green
from scgan.artifacts.model_file import CheckpointError, load_model

pytestmark = pytest.mark.integration

HEAD = {"model.head": "seg", "model.head_width": 4, "model.head_depth": 2, "augment.name": "mixture"}


@pytest.fixture(scope="module")
def head_model(tmp_path_factory, demo_root, demo_category):
    from scgan.training.fit import train

    cfg = tiny_config(demo_root, demo_category, **HEAD)
    return train(cfg, tmp_path_factory.mktemp("head"), progress=False), cfg


def test_head_is_trained_stored_and_scored(head_model):
    res, cfg = head_model
    loaded = load_model(res.model_path)
    assert loaded.parts.get("seg_head") is not None
    scorer = loaded.scorer()
    assert scorer.names[-1] == "seg_max" and set(loaded.calibration.scores) == set(scorer.names)
    assert loaded.calibration.map_high == 1.0  # a probability is shown as it is
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        scores, amap = scorer(x)
        seg = torch.sigmoid(loaded.parts["seg_head"](x, loaded.parts["generator"](x).x_hat))[:, 0]
    assert torch.allclose(amap, seg, atol=1e-6)  # the head's map is the anomaly map
    pooled = torch.nn.functional.avg_pool2d(seg[:, None], 5, 1, 2, count_include_pad=False)
    assert torch.allclose(scores[:, -1], pooled.flatten(1).amax(1), atol=1e-5)  # seg_max: DRAEM's pooled peak
    # The Lightning checkpoint holds the same head and scores the same.
    ckpt = load_model(res.last_checkpoint)
    with torch.inference_mode():
        assert torch.allclose(ckpt.scorer()(x)[0], scores, atol=1e-6)
    logs = (res.output_dir / "logs" / "metrics.csv").read_text()
    assert "train/seg" in logs.splitlines()[0]


def test_a_probability_maps_normal_pixels_are_blue_and_its_threshold_green(head_model):
    """A head's normal pixels sit well above 0 (0.35-0.42 at 64 px): its colours start at them, not at 0."""
    loaded = load_model(head_model[0].model_path)
    assert_normal_blue_threshold_green(loaded)
    assert loaded.calibration.heat_low > 0.0


def test_head_weights_must_match_the_config(head_model, tmp_path):
    res, _ = head_model
    obj = torch.load(res.model_path, map_location="cpu", weights_only=True)
    del obj["parts"]["seg_head"]
    torch.save(obj, tmp_path / "no_head.pt")
    with pytest.raises(CheckpointError, match="lacks the seg_head weights"):
        load_model(tmp_path / "no_head.pt")


def test_head_model_exports_to_onnx_with_parity(head_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.onnx_file import OnnxScorer

    res, _ = head_model
    path = export_onnx(res.model_path, tmp_path / "head.onnx")  # export checks parity with torch
    runner = OnnxScorer(path)
    assert runner.score_names[-1] == "seg_max" and runner.default_score in runner.score_names


def test_seg_scores_need_a_head(demo_root, demo_category):
    with pytest.raises(ValueError, match="needs a model with a head"):
        tiny_config(demo_root, demo_category, default_score="seg_max")
    assert tiny_config(demo_root, demo_category, default_score="seg_max", **HEAD).score.default_score == "seg_max"


def test_steps_budget_sets_whole_epochs(demo_root, demo_category):
    from scgan.training.gan import planned_epochs

    cfg = tiny_config(demo_root, demo_category, steps=10)
    assert planned_epochs(cfg, 24) == 4  # 24 images in batches of 8: 3 steps an epoch, ceil(10 / 3)
    cfg.train.steps = 0
    assert planned_epochs(cfg, 24) == cfg.train.epochs
