"""Train -> test -> predict end to end on a tiny demo set; reload; calibration independent of the test split."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from scgan.artifacts.model_file import load_model
from scgan.inference.evaluate import run_test
from scgan.inference.predict import run_predict
from scgan.training.fit import train

NAMED_SCORES = {"as", "l_con", "l_enc", "map_max", "ssim_max", "msgms_max"}  # what a model without a head scores

pytestmark = pytest.mark.integration


def test_train_writes_checkpoints_logs_and_model(trained):
    res, cfg = trained
    out = res.output_dir
    assert res.model_path.exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "config.yaml").exists() and (out / "train_summary.json").exists()
    rows = list(csv.DictReader(open(out / "logs" / "metrics.csv")))
    epochs = {r["epoch"] for r in rows if r.get("train/total")}
    assert epochs == {"0", "1"}
    for term in ("train/enc", "train/con", "train/adv", "train/ssim", "train/d_loss", "val/score_mean"):
        assert any(r.get(term) for r in rows), term
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["seed"] == cfg.seed and summary["selection"].startswith("last epoch")
    loaded = load_model(res.model_path)
    assert loaded.calibration is not None and loaded.calibration.n_images >= 1
    assert set(loaded.calibration.scores) == NAMED_SCORES
    # default_score "auto": chosen on validation images with synthetic defects, stored with the model.
    assert set(loaded.calibration.selection) == NAMED_SCORES
    assert all(0.0 <= v <= 1.0 for v in loaded.calibration.selection.values())
    assert loaded.default_score == loaded.calibration.selected_score in NAMED_SCORES


def test_test_command_outputs(trained, tmp_path):
    res, _ = trained
    out = run_test(res.model_path, tmp_path, progress=False)
    m = json.loads((tmp_path / "metrics.json").read_text())
    # The demo test split has normal and anomalous images and masks: every metric is defined.
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, (key, m.get(key))
    assert m["pixel_metrics_resolution"] == [32, 32]  # the masks as stored (the demo set is written at 32 px)
    assert set(m["scores"]) == NAMED_SCORES
    for name in NAMED_SCORES:
        assert 0.0 <= m["scores"][name]["image_auroc"] <= 1.0, name  # defined (not nan) for every score
    # Two epochs leave the learned scores near chance, but the residual ones rank the demo's large defects above
    # the normal images: 1.0 for every training seed tried (a detector at chance would score 0.5).
    assert m["scores"]["as"]["image_auroc"] >= 0.8 and m["scores"]["l_con"]["image_auroc"] >= 0.8
    assert m["info"]["model"].startswith("last epoch") and m["info"]["seed"] == 0
    assert m["default_score"] == m["score_selection"]["selected"] == load_model(res.model_path).default_score
    assert m["threshold"] == pytest.approx(load_model(res.model_path).calibration.scores[m["default_score"]].threshold)
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert len(rows) == len(out.result.labels) and {r["decision"] for r in rows} <= {"normal", "anomalous"}


def test_pixel_metrics_are_computed_at_the_masks_stored_resolution(trained, tmp_path, demo_category):
    """A test set stored at 64 px scored by a 32 px model: maps are up-sampled to the 64 px masks."""
    from scgan.data.datasets import build_dataset
    from scgan.data.demo import make_demo_dataset
    from scgan.evaluation.metrics import aupro, pixel_auroc, pixel_auroc_by_defect
    from scgan.inference.summary import maps_at

    res, _ = trained
    root = make_demo_dataset(tmp_path / "data", n_train=2, n_test=8, image_size=64, seed=3, categories=[demo_category])
    out = run_test(res.model_path, tmp_path / "test", root=str(root), progress=False, report=False)
    m = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert m["pixel_metrics_resolution"] == [64, 64]
    # What the scorer saw:
    assert np.stack(out.result.maps).shape[1:] == np.stack(out.result.masks).shape[1:] == (32, 32)
    stored = build_dataset("mvtec", root, demo_category, "test", 32).stored_masks()
    assert stored.shape[1:] == (64, 64) and stored.any()
    full = maps_at(out.result.maps, (64, 64))
    assert m["pixel_auroc"] == pytest.approx(pixel_auroc(full, stored), abs=1e-9)
    assert m["aupro"] == pytest.approx(aupro(full, stored), abs=1e-9)
    by_defect = pixel_auroc_by_defect(full, stored, out.result.labels, out.result.defects)
    assert by_defect and set(m["pixel_auroc_by_defect"]) == set(by_defect)
    for name, v in by_defect.items():
        assert m["pixel_auroc_by_defect"][name] == pytest.approx(v), name


def test_checkpoint_reload_gives_identical_scores(trained, tmp_path):
    res, _ = trained
    a = run_test(res.model_path, tmp_path / "a", progress=False, report=False).result
    b = run_test(res.output_dir / "checkpoints" / "last.ckpt", tmp_path / "b", progress=False, report=False).result
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)


def test_predict_scores_files_and_folders(trained, tmp_path, demo_root, demo_category):
    res, _ = trained
    test_dir = demo_root / demo_category / "test"
    files = sorted(test_dir.rglob("*.png"))[:3]
    out = run_predict([files[0], test_dir / "good"], tmp_path, model=res.model_path, progress=False)
    n_good = len(list((test_dir / "good").glob("*.png")))
    assert len(out.predictions) == 1 + n_good and not out.skipped
    rows = list(csv.DictReader(open(out.csv_path)))
    assert {r["decision"] for r in rows} <= {"normal", "anomalous"}
    ov = out.predictions[0].overlay
    from PIL import Image

    w, h = Image.open(files[0]).size
    assert Image.open(ov).size[0] == w and Image.open(ov).size[1] > h  # the original size, a caption band below it
    out = run_predict([files[0]], tmp_path / "plain", model=res.model_path, progress=False, captions=False)
    assert Image.open(out.predictions[0].overlay).size == (w, h)  # without the band: the original size exactly
    # The same image scored by predict and by test gives the same score.
    t = run_test(res.model_path, tmp_path / "t", progress=False, report=False).result
    i = t.paths.index(str(files[0]))
    assert out.predictions[0].scores["map_max"] == pytest.approx(float(t.score("map_max")[i]), rel=1e-4, abs=1e-6)


def test_calibration_ignores_the_test_split(tmp_path, demo_root, demo_category):
    """Threshold and normalisation depend on normal validation data only."""
    altered = tmp_path / "altered"
    shutil.copytree(demo_root, altered)
    test_dir = altered / demo_category / "test"
    # Change the test split: drop some images and relabel the normal ones as anomalous.
    for p in sorted(test_dir.rglob("*.png"))[::2]:
        p.unlink()
    shutil.rmtree(test_dir / "good")
    cals = []
    for root in (demo_root, altered):
        cfg = tiny_config(root, demo_category, epochs=1)
        res = train(cfg, tmp_path / f"run_{root.name}", progress=False)
        cals.append(load_model(res.model_path).calibration.to_dict())
    assert cals[0] == cals[1]


def test_scorer_matches_losses_definition(trained):
    res, _ = trained
    loaded = load_model(res.model_path)
    scorer = loaded.scorer()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        s, m = scorer(x)
        out = loaded.parts["generator"](x)
    l_con = (x - out.x_hat).abs().mean(dim=(1, 2, 3))
    l_enc = (out.z1 - out.z2).pow(2).mean(dim=(1, 2, 3))
    beta = loaded.config.model.beta
    torch.testing.assert_close(s[:, 1], l_con)
    torch.testing.assert_close(s[:, 2], l_enc)
    torch.testing.assert_close(s[:, 0], beta * l_con + (1 - beta) * l_enc)
    torch.testing.assert_close(s[:, 3], m.flatten(1).amax(1))
    assert m.shape == (2, 32, 32)


def test_auto_sigma_is_chosen_on_validation_and_used_everywhere(tmp_path, demo_root, demo_category, monkeypatch):
    """score.sigma = auto: the chosen sigma is stored with the calibration, and the statistics fit it."""
    import scgan.inference.calibrate as fit_mod
    from scgan.inference.calibrate import select_sigma, sigma_candidates
    from scgan.models.scoring import score_loader
    from scgan.training.datamodule import SCGANDataModule

    # Force a choice other than the default (S / 64, the scorer's starting sigma), so that a model
    # scoring with the starting sigma, or map_max statistics left from it, would fail below.
    def pick_largest(normal, synthetic, masks, candidates):
        _, aurocs = select_sigma(normal, synthetic, masks, candidates)
        return max(candidates), aurocs

    monkeypatch.setattr(fit_mod, "select_sigma", pick_largest)
    cfg = tiny_config(demo_root, demo_category, epochs=1, **{"score.sigma": "auto"})
    loaded = load_model(train(cfg, tmp_path / "run", progress=False).model_path)
    cal = loaded.calibration
    assert cal.sigma == max(sigma_candidates(cfg.model.image_size)) != cfg.model.image_size / 64
    assert set(cal.sigma_selection) == {"0", "0.25", "0.5", "1", "2"}  # S / 64 x (0, 0.5, 1, 2, 4) at S = 32
    assert loaded.scorer().blur.sigma == cal.sigma
    # Re-scoring the validation images with the loaded scorer reproduces the stored map_max statistics.
    dm = SCGANDataModule(loaded.config)
    val = score_loader(loaded.scorer(), torch.utils.data.DataLoader(dm.dataset("val"), batch_size=8))
    assert float(val.score("map_max").max()) == pytest.approx(cal.scores["map_max"].max, rel=1e-5)
    assert float(val.score("map_max").max()) == pytest.approx(cal.map_high, rel=1e-5)
    m = json.loads(json.dumps(run_test(loaded, tmp_path / "test", progress=False, report=False).metrics, default=float))
    assert m["map_smoothing"]["sigma"] == cal.sigma and m["map_smoothing"]["config"] == "auto"


def test_fixed_sigma_is_kept(tmp_path, demo_root, demo_category):
    cfg = tiny_config(demo_root, demo_category, epochs=1, **{"score.sigma": 0.5})
    loaded = load_model(train(cfg, tmp_path, progress=False).model_path)
    assert loaded.calibration.sigma == 0.5 and loaded.calibration.sigma_selection == {}
    assert loaded.scorer().blur.sigma == 0.5


def test_default_sigma_is_s_over_64(trained):
    res, cfg = trained
    loaded = load_model(res.model_path)
    assert cfg.score.sigma is None and loaded.calibration.sigma == cfg.model.image_size / 64
    assert loaded.calibration.sigma_selection == {} and loaded.scorer().blur.sigma == loaded.calibration.sigma


def test_the_calibration_sigma_wins_over_the_config(trained):
    """A model scores with the sigma its calibration was fitted with; without one, with the config's."""
    from scgan.calibration.stats import Calibration
    from scgan.models.scgan.scorer import build_scorer

    res, cfg = trained
    loaded = load_model(res.model_path)
    d = loaded.calibration.to_dict()
    d["sigma"] = 3.0
    assert build_scorer(loaded.config, loaded.parts["generator"],
                        calibration=Calibration.from_dict(d)).blur.sigma == 3.0
    d.pop("sigma")
    d.pop("sigma_selection")  # a calibration saved before sigma was recorded
    old = Calibration.from_dict(d)
    assert old.sigma is None
    assert build_scorer(loaded.config, loaded.parts["generator"], calibration=old).blur.sigma == 0.5
    fixed = tiny_config(cfg.data.root, cfg.data.category, **{"score.sigma": 1.5})
    assert build_scorer(fixed, loaded.parts["generator"], calibration=old).blur.sigma == 1.5


def test_report_heat_maps_are_scaled_by_the_calibration_not_the_test_set(trained, tmp_path, monkeypatch):
    """The report shows the calibration's heat scale, fitted on normal validation images (0 at heat_low, 0.5 at the
    map's threshold): a test set with larger values saturates at 1 instead of being rescaled by its own maximum."""
    import dataclasses

    import scgan.reporting.report

    res, _ = trained
    loaded = load_model(res.model_path)
    maps = np.stack(run_test(loaded, tmp_path / "plain", progress=False, report=False).result.maps)
    # A scale whose red end is below the test set's largest value, so that scaling by the test maximum would differ.
    loaded.calibration = dataclasses.replace(loaded.calibration, heat_low=0.0, heat_threshold=0.25 * float(maps.max()))
    shown = {}
    real = scgan.reporting.report.write_report

    def capture(out_dir, **kw):
        shown.update({e.name: e.heat for e in kw["examples_top"] + kw["examples_bottom"]})
        return real(out_dir, **kw)

    monkeypatch.setattr(scgan.reporting.report, "write_report", capture)
    out = run_test(loaded, tmp_path / "report", progress=False, n_examples=3)
    assert len(shown) == 6 and (tmp_path / "report" / "report.md").exists()
    names = [str(Path(p).parent.name) + "/" + Path(p).name for p in out.result.paths]
    high = 2 * loaded.calibration.heat_threshold  # heat 1: twice the threshold's distance from heat_low (0)
    assert loaded.calibration.heat_range() == pytest.approx((0.0, high))
    saturated = 0
    for name, heat in shown.items():
        amap = out.result.maps[names.index(name)]
        np.testing.assert_array_equal(heat, loaded.calibration.heat(amap))
        np.testing.assert_allclose(heat, np.clip(amap / high, 0.0, 1.0), rtol=1e-6, atol=1e-7)
        saturated += int((heat == 1.0).any())
    assert saturated >= 1  # the most anomalous images exceed the red end: clipped, not rescaled
    top = max(shown, key=lambda n: float(out.result.maps[names.index(n)].max()))
    assert not np.allclose(shown[top], out.result.maps[names.index(top)] / float(maps.max()))
