"""The PatchCore detector's map_z score (patchcore.position_grid): the smoothed map judged location by location
against the cross-fitted normal maps. On a hand-made map and grid; the grid's statistics of every fold but one; a
fitted model keeps them in its file, scores them the same through ONNX, and refuses what would make them wrong."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_FEATURES


def _scorer(mean: torch.Tensor, spread: torch.Tensor, sigma: float = 0.0, position_map: bool = False):
    from scgan.models.patchcore.backbone import load_backbone
    from scgan.models.patchcore.model import FeatureLayout, MemoryBank, PatchCoreScorer

    memory = MemoryBank(torch.zeros(1, 40))
    memory.set_position(mean, spread, sigma)
    return PatchCoreScorer(load_backbone("lite1", 6), memory, FeatureLayout((6,), 1), sigma=sigma, position=True,
                           position_map=position_map)


def _built(cfg):
    from scgan.models.patchcore.kind import PATCHCORE

    return PATCHCORE.build_scorer(cfg, PATCHCORE.build_parts(cfg, None))


@pytest.mark.unit
def test_map_z_is_the_largest_rise_over_the_normal_maps_spread_on_a_hand_made_map():
    patch = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 3.0],
                          [0.0, 2.0, 0.0, 0.0],
                          [6.0, 0.0, 0.0, 0.0]]).view(1, 1, 4, 4)
    mean = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 2.0],
                         [0.0, 0.0, 0.0, 0.0],
                         [5.0, 0.0, 0.0, 0.0]])
    spread = torch.ones(4, 4)
    spread[2, 1] = 0.5
    # the map is the grid's size (no up-sampling) and unsmoothed (sigma 0): z by hand, cell by cell
    scorer = _scorer(mean, spread)
    scores, smooth = scorer.map_outputs((4, 4), patch)
    assert scorer.names == ("map_max", "patch_max", "map_z")
    # (6 - 5) / 1 = 1 at the corner, (3 - 2) / 1 = 1, (2 - 0) / 0.5 = 4: the middle cell's rise wins, not the peak
    torch.testing.assert_close(scores[0], torch.tensor([6.0, 6.0, 4.0]))
    torch.testing.assert_close(smooth[0], patch[0, 0])  # the map shown is the map, not its z
    # position_map: the map shown is the z map, whose peak is map_z; the scores are the same
    z_scores, z_map = _scorer(mean, spread, position_map=True).map_outputs((4, 4), patch)
    torch.testing.assert_close(z_map[0], (patch[0, 0] - mean) / spread)
    torch.testing.assert_close(z_scores, scores)
    # one cell: the same mean and spread everywhere, whatever the map's size
    flat = _scorer(torch.full((1, 1), 1.0), torch.full((1, 1), 2.0))
    big = torch.nn.functional.interpolate(patch, size=(8, 12), mode="bilinear", align_corners=False)
    scores, _ = flat.map_outputs((8, 12), patch)
    assert float(scores[0, 2]) == pytest.approx((float(big.max()) - 1.0) / 2.0, abs=1e-6)


@pytest.mark.unit
def test_the_grid_of_every_fold_but_one_is_that_folds_leave_out():
    from scgan.training.crossfit import FoldPosition

    rng = np.random.default_rng(0)
    cells = [torch.from_numpy(rng.gamma(2.0, 1.0, (3, 3))) for _ in range(10)]
    folds = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    first, second = torch.zeros(3, 3, 3, dtype=torch.float64), torch.zeros(3, 3, 3, dtype=torch.float64)
    for c, f in zip(cells, folds):
        first[f] += c
        second[f] += c ** 2
    position = FoldPosition([folds.count(f) for f in range(3)], first, second)
    for leave in (None, 0, 1, 2):
        others = torch.stack([c for c, f in zip(cells, folds) if f != leave])
        mean, spread = position.stats(leave)
        want = others.std(0, unbiased=False)
        want = want.clamp_min(0.1 * float(want.median()))
        torch.testing.assert_close(mean, others.mean(0).float())
        torch.testing.assert_close(spread, want.float())
    # every normal map the same in one cell: the spread there is floored at a tenth of the grid's median spread
    first[:, 0, 0], second[:, 0, 0] = 2.0 * torch.tensor([4.0, 3.0, 3.0]), 4.0 * torch.tensor([4.0, 3.0, 3.0])
    _, spread = FoldPosition([4, 3, 3], first, second).stats()
    assert float(spread[0, 0]) == pytest.approx(0.1 * float(spread.median()), rel=1e-6)
    counts = torch.tensor([4.0, 3.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    alike = FoldPosition([4, 3, 3], 2.0 * counts.expand(3, 3, 3), 4.0 * counts.expand(3, 3, 3))
    mean, spread = alike.stats()  # every normal map 2 everywhere: no spread anywhere, floored at 1
    assert bool((mean == 2.0).all()) and bool((spread == 1.0).all())


@pytest.mark.unit
def test_the_grid_needs_a_fixed_sigma_and_names_its_score():
    from scgan.config import load_config
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=r"patchcore.position_grid must be in \[0, 256\], got -1"):
        load_config("default", overrides=["patchcore.position_grid=-1"])
    with pytest.raises(ValueError, match=r"position_grid needs a fixed score.sigma \(null or a number of pixels\), "
                                         r"not auto"):
        check_config(load_config("default", overrides=["patchcore.position_grid=8", "score.sigma=auto"]))
    # the map shown is map_z's only where map_z is computed
    shown = load_config("default", overrides=["patchcore.position_map=true"])
    plain = check_config(load_config("default", overrides=["patchcore.position_grid=0", "patchcore.position_map=true"]))
    assert plain.patchcore.position_map and not _built(plain).position_map
    assert _built(shown).position_map and _built(shown).map_peak == "map_z"
    assert _built(load_config("default")).map_peak == "map_max"
    with pytest.raises(ValueError, match=r"its scores: auto, map_max, patch_max \(map_z: .*computed only where that is "
                                         r"set\)\)$"):
        check_config(load_config("default", overrides=["score.default_score=map_z", "patchcore.position_grid=0"]))
    cfg = check_config(load_config("default", overrides=["patchcore.position_grid=8", "score.default_score=map_z"]))
    assert cfg.score.default_score == "map_z"
    # the default preset's own map_z goes with its grid: the grid off alone gives the auto choice
    assert load_config("default").score.default_score == "map_z"
    assert check_config(load_config("default", overrides=["patchcore.position_grid=0"])).score.default_score == "auto"
    scorer = _scorer(torch.zeros(2, 2), torch.ones(2, 2), sigma=4.0)
    scorer.set_sigma(4.0)
    with pytest.raises(ValueError, match=r"map_z's normal maps were smoothed with sigma 4 px; this model cannot score "
                                         r"with sigma 2"):
        scorer.set_sigma(2.0)


@pytest.fixture(scope="module")
def positioned(tmp_path_factory, demo_root, demo_category):
    """The session's tiny detector fitted with map_z (a 4 x 4 grid) as its default score: its model file."""
    from scgan.config import load_config
    from scgan.training.fit import train

    cfg = load_config("default", overrides={**TINY_FEATURES, "data.root": str(demo_root),
                                            "data.category": demo_category, "score.threshold_source": "crossfit",
                                            "score.crossfit_folds": 4, "patchcore.position_grid": 4,
                                            "score.default_score": "map_z"})
    return train(cfg, tmp_path_factory.mktemp("position"), progress=False).model_path


@pytest.mark.integration
def test_a_fitted_grid_is_the_cross_fitted_maps_and_the_threshold_rests_on_out_of_fold_z(positioned, demo_root,
                                                                                        demo_category, feature_model):
    from scgan.artifacts.model_file import load_model

    loaded = load_model(positioned)
    memory = loaded.parts["memory"]
    cal = loaded.calibration
    assert memory.position_mean.shape == (1, 1, 4, 4) and bool((memory.position_spread > 0).all())
    assert float(memory.position_sigma) == pytest.approx(cal.sigma)
    assert loaded.default_score == "map_z" and cal.n_crossfit > 0
    z = np.asarray(cal.normal_scores["crossfit"]["map_z"])
    assert z.shape == (cal.n_crossfit,) and np.isfinite(z).all()
    # the bank is that of the same fit without the grid
    plain = load_model(feature_model[0].model_path)
    torch.testing.assert_close(memory.bank, plain.parts["memory"].bank)


@pytest.mark.integration
def test_the_grid_is_cross_fitted_with_a_threshold_from_the_validation_images_alone(demo_root, demo_category,
                                                                                   positioned, tmp_path):
    from scgan.artifacts.model_file import load_model
    from scgan.config import load_config
    from scgan.training.fit import train

    cfg = load_config("default", overrides={**TINY_FEATURES, "data.root": str(demo_root),
                                            "data.category": demo_category, "score.crossfit_folds": 4,
                                            "patchcore.position_grid": 4, "score.default_score": "map_z"})
    assert cfg.score.threshold_source == "validation"
    loaded = load_model(train(cfg, tmp_path, progress=False).model_path)
    cal = loaded.calibration
    assert cal.n_crossfit == 0 and cal.normal_scores == {} and loaded.default_score == "map_z"
    # the same grid as the cross-fitted threshold's fit: it comes from the same folds
    fitted = load_model(positioned).parts["memory"]
    torch.testing.assert_close(loaded.parts["memory"].position_mean, fitted.position_mean)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["crossfit_folds"] == 4 and "crossfit_scores_s" not in summary


@pytest.mark.integration
def test_a_model_with_map_z_scores_the_same_through_onnx_and_its_file_refuses_a_broken_grid(positioned, tmp_path,
                                                                                          caplog):
    pytest.importorskip("onnxruntime")
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.model_file import load_model
    from scgan.inference.detector import Detector

    onnx_path = export_onnx(positioned, tmp_path / "z.onnx")  # checks torch/ONNX parity itself
    torch_det, onnx_det = Detector.load(positioned, backend="torch"), Detector.load(onnx_path)
    image = np.random.default_rng(3).integers(0, 256, (50, 120, 3), dtype=np.uint8)
    a, b = torch_det.predict(image), onnx_det.predict(image)
    assert a.score_name == "map_z" and max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
    with caplog.at_level("WARNING"):  # tiles: each judged as if it were a whole image, and the user is told
        Detector.load(onnx_path, tile=64)
    assert "in tiles, each tile is judged as if it were a whole image (not measured)" in caplog.text
    blob = torch.load(positioned, weights_only=True)
    blob["parts"]["memory"]["position_spread"][..., 0, 0] = 0.0
    torch.save(blob, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="normal maps' grid .* is not a finite 4 x 4 grid with positive spreads"):
        load_model(tmp_path / "broken.pt")


@pytest.mark.unit
def test_each_training_images_z_is_judged_against_the_other_folds_maps():
    """crossfit_scores' map_z of an image in fold f is its map against fold_position's grid without fold f."""
    import torch.nn.functional as F

    from scgan.config import load_config
    from scgan.models.patchcore.kind import PATCHCORE
    from scgan.models.patchcore.model import MemoryBank
    from scgan.training.crossfit import FoldDistances, crossfit_scores, fold_position

    cfg = load_config("default", overrides={"patchcore.resolution": 64, "patchcore.position_grid": 4,
                                            "score.crossfit_folds": 3})
    gen = torch.Generator().manual_seed(0)
    sizes = {i: (64, 64 + 32 * (i % 2)) for i in range(9)}  # two aspects: each map pooled into the same grid
    distances = {i: torch.rand(1, 1, h // 8, w // 8, generator=gen) * (1 + i) for i, (h, w) in sizes.items()}
    folds = [i % 3 for i in range(9)]
    fold = FoldDistances(distances, sizes, folds, 3, 0.0, 0.0, 0.0)
    space = MemoryBank(torch.randn(8, 152))
    position = fold_position(cfg, fold, 2.0)
    plain = PATCHCORE.build_scorer(cfg, {"memory": space})  # its smoothing alone
    plain.set_sigma(2.0)
    cells = {i: F.adaptive_avg_pool2d(plain.upsampled(sizes[i], d)[1], 4)[0, 0] for i, d in distances.items()}
    assert position.counts == [3, 3, 3]
    torch.testing.assert_close(position.stats()[0], torch.stack(list(cells.values())).mean(0))
    got = crossfit_scores(cfg, fold, space, 2.0, position)
    col = got.names.index("map_z")
    for i in range(9):
        memory = MemoryBank(torch.randn(8, 152))
        memory.set_position(*position.stats(leave_out=folds[i]), 2.0)
        want = memory.position_z(plain.upsampled(sizes[i], distances[i])[1]).max()
        memory.set_position(*position.stats(), 2.0)
        every = memory.position_z(plain.upsampled(sizes[i], distances[i])[1]).max()
        assert got.scores[i, col] == pytest.approx(float(want), rel=1e-5) and abs(float(want - every)) > 1e-4
    # a fold with a single map beside it has no spread to judge by: refused in one line
    two = FoldDistances({0: distances[0], 1: distances[1], 2: distances[2]}, sizes, [0, 1, 1], 2, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"at least 2 training images beside each fold, and one fold has 1 beside it: "
                                         r"give more normal training images, or fit with patchcore.position_grid=0"):
        fold_position(cfg, two, 2.0)


@pytest.mark.integration
def test_an_update_keeps_the_grid_as_fitted(positioned, demo_root, demo_category, tmp_path):
    """New normal images join the bank; map_z's grid stays the fitted one (and the model loads and scores)."""
    from scgan.artifacts.model_file import load_model
    from scgan.inference.detector import Detector
    from scgan.training.update import update_model

    res = update_model(positioned, [demo_root / demo_category / "test" / "good"], tmp_path / "updated.pt")
    before, after = load_model(positioned).parts["memory"], load_model(res.path).parts["memory"]
    assert after.bank.shape[0] >= before.bank.shape[0]
    for name in ("position_mean", "position_spread", "position_sigma"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name))
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.isfinite(Detector.load(res.path, backend="torch").predict(image).scores["map_z"])


@pytest.mark.integration
def test_a_model_file_from_before_the_grid_loads_and_scores_as_it_did(feature_model, tmp_path):
    """A file whose config predates patchcore.position_grid (and position_map) had no grid: it loads with the grid
    off, its default score and scores unchanged."""
    from scgan.artifacts.model_file import load_model
    from scgan.inference.detector import Detector

    blob = torch.load(feature_model[0].model_path, weights_only=True)
    for key in ("position_grid", "position_map"):
        blob["config"]["patchcore"].pop(key, None)  # (a config keeps a setting left at its earlier value out)
    torch.save(blob, tmp_path / "older.pt")
    loaded = load_model(tmp_path / "older.pt")
    assert loaded.config.patchcore.position_grid == 0 and "map_z" not in loaded.scorer().names
    image = np.random.default_rng(7).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    old, now = (Detector.load(p, backend="torch").predict(image) for p in (tmp_path / "older.pt",
                                                                            feature_model[0].model_path))
    assert old.score_name == now.score_name and old.scores == now.scores
