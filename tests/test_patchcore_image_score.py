"""The PatchCore detector's map_top score (patchcore.top_share): the mean of the largest values of the smoothed
map, on a hand-made map; a fitted model takes it by recalibrating, without fitting again, and exports it."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def _scorer(top: int):
    from scgan.models.patchcore.backbone import load_backbone
    from scgan.models.patchcore.model import FeatureLayout, MemoryBank, PatchCoreScorer

    return PatchCoreScorer(load_backbone("lite1", 6), MemoryBank(torch.zeros(1, 40)), FeatureLayout((6,), 1),
                           sigma=0.0, top=top)


@pytest.mark.unit
def test_map_top_is_the_mean_of_the_largest_values_of_a_hand_made_map():
    patch = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 3.0],
                          [0.0, 2.0, 0.0, 0.0],
                          [6.0, 0.0, 0.0, 0.0]]).view(1, 1, 4, 4)
    size = (4, 4)  # the map's size: the patch grid itself, no smoothing (sigma 0)
    scores, smooth = _scorer(3).map_outputs(size, patch)
    assert _scorer(3).names == ("map_max", "patch_max", "map_top")
    torch.testing.assert_close(scores[0], torch.tensor([6.0, 6.0, (6.0 + 3.0 + 2.0) / 3]))
    scores, _ = _scorer(0).map_outputs(size, patch)
    assert scores.shape == (1, 2) and _scorer(0).names == ("map_max", "patch_max")  # unset: as models always were
    one, _ = _scorer(1).map_outputs(size, patch)
    assert float(one[0, 2]) == float(one[0, 0])  # one pixel: the map's maximum


@pytest.mark.unit
def test_the_top_count_follows_the_share():
    from scgan.models.patchcore.model import top_count

    assert top_count(0.0, 320) == 0
    assert top_count(0.01, 320) == 1024
    assert top_count(1e-9, 320) == 1  # never an empty mean


@pytest.mark.unit
def test_the_top_share_is_checked_and_names_the_score():
    from scgan.config import load_config
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=r"patchcore.top_share must be in \[0, 0.5\]"):
        load_config("default", overrides=["patchcore.top_share=0.9"])
    with pytest.raises(ValueError, match=r"smallest map the model takes \(48 x 48 px\); at resolution 320 it may be "
                                         r"at most 0.0225$"):
        check_config(load_config("default", overrides=["patchcore.top_share=0.05"]))
    with pytest.raises(ValueError, match=r"patchcore.pad must be in \[0, resolution / 2\] \(0-24 at resolution 48\), "
                                         r"got 32: lower it"):
        load_config("default", overrides=["patchcore.resolution=48"])
    with pytest.raises(ValueError, match=r"its scores: auto, map_max, patch_max, map_z \(map_top: "):
        check_config(load_config("default", overrides=["score.default_score=map_top"]))
    cfg = check_config(load_config("default", overrides=["patchcore.top_share=0.01", "score.default_score=map_top"]))
    assert cfg.score.default_score == "map_top"


@pytest.mark.integration
def test_a_fitted_model_takes_map_top_by_recalibrating_and_exports_it(feature_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from scgan.artifacts.export import export_onnx
    from scgan.inference.detector import Detector
    from scgan.inference.recalibrate import recalibrate

    res, _ = feature_model
    path, cal, _ = recalibrate(res.model_path, None, tmp_path / "top.pt",
                               overrides={"patchcore.top_share": 0.02, "score.default_score": "map_top"})
    assert set(cal.scores) == {"map_max", "patch_max", "map_top"} and cal.selected_score is None
    onnx_path = export_onnx(path, tmp_path / "top.onnx")  # checks torch/ONNX parity within 1e-4 itself
    before, torch_det, onnx_det = (Detector.load(res.model_path, backend="torch"), Detector.load(path, backend="torch"),
                                   Detector.load(onnx_path))
    assert torch_det.default_score == "map_top"
    image = np.random.default_rng(3).integers(0, 256, (50, 120, 3), dtype=np.uint8)
    old, a, b = before.predict(image), torch_det.predict(image), onnx_det.predict(image)
    assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
    assert a.scores["map_max"] == pytest.approx(old.scores["map_max"], abs=1e-6)  # the other scores unchanged
    assert a.scores["map_top"] <= a.scores["map_max"]


@pytest.mark.integration
def test_choosing_the_smoothing_computes_map_top_again_at_the_chosen_sigma(feature_model, tmp_path):
    """score.sigma=auto scores at one sigma and then chooses another: map_top's threshold must rest on its values at
    the chosen one, as map_max's does (the normal images' largest score equals a fresh scoring's)."""
    from scgan.artifacts.model_file import load_model
    from scgan.inference.recalibrate import calibration_set, image_loader, recalibrate

    res, _ = feature_model
    path, cal, _ = recalibrate(res.model_path, None, tmp_path / "auto.pt",
                               overrides={"patchcore.top_share": 0.02, "score.sigma": "auto"})
    loaded = load_model(path)
    scorer = loaded.scorer()
    assert scorer.sigma == cal.sigma != load_model(res.model_path).calibration.sigma  # another sigma was chosen
    with torch.no_grad():
        scores = torch.cat([scorer.run(b["image"])[0] for b in image_loader(calibration_set(loaded, None), 8)])
    for name in ("map_max", "map_top"):
        assert float(scores[:, scorer.names.index(name)].max()) == pytest.approx(cal.scores[name].max, abs=1e-5)


@pytest.mark.unit
def test_kept_cross_fitted_scores_are_dropped_when_a_scoring_setting_changes(caplog):
    """They were scored with the model's scoring settings: with another top_share they would be map_top of another
    count, so a recalibration rests on the validation images alone and says so."""
    from scgan.calibration.stats import fit_calibration
    from scgan.config import load_config
    from scgan.inference.calibrate import kept_crossfit, scoring_changes

    before, after = load_config("default"), load_config("default", overrides=["patchcore.top_share=0.01"])
    assert scoring_changes(before, before) == [] and scoring_changes(before, after) == ["patchcore.top_share"]
    cal = fit_calibration(np.ones((5, 2)), ("map_max", "patch_max"), 0.99, crossfit=np.ones((7, 2)))
    cal.sigma = 4.0
    assert kept_crossfit(cal)(4.0, ("map_max", "patch_max")).shape == (7, 2)
    with caplog.at_level("WARNING"):
        assert kept_crossfit(cal, scoring_changes(before, after)) is None
    assert "computed before patchcore.top_share changed" in caplog.text
