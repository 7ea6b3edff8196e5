"""score.threshold_source = crossfit on a tiny PatchCore detector: every normal training image scored by a bank of
the folds without it, the threshold resting on those and the validation images, the scores kept in the model file
and reused (not scored again) by scgan calibrate and scgan update; the model itself as without the option."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import TINY_FEATURES
from scgan.artifacts.model_file import load_model
from scgan.calibration.stats import false_alarm_estimate
from scgan.config import load_config

pytestmark = pytest.mark.integration

N_TRAIN = 24  # the demo category's normal training images (validation included)


@pytest.fixture(scope="module")
def crossfitted(tmp_path_factory, demo_root, demo_category):
    """The session's tiny detector (feature_model's settings) fitted with cross-fitted thresholds: its model file."""
    from scgan.training.fit import train

    cfg = load_config("default", overrides={**TINY_FEATURES, "data.root": str(demo_root),
                                            "data.category": demo_category, "score.threshold_source": "crossfit",
                                            "score.crossfit_folds": 4})
    return train(cfg, tmp_path_factory.mktemp("crossfit"), progress=False).model_path


def test_every_training_image_gets_an_out_of_fold_score_and_the_threshold_rests_on_all(crossfitted, feature_model):
    from scgan.data.datasets import stream_for
    from scgan.data.io import image_to_tensor
    from scgan.models.patchcore.kind import PATCHCORE

    loaded, plain = load_model(crossfitted), load_model(feature_model[0].model_path)
    cal = loaded.calibration
    assert cal.n_crossfit + cal.n_images == N_TRAIN and cal.n_crossfit > cal.n_images > 0
    for name, stats in cal.scores.items():  # the quantile of validation and cross-fitted scores together
        pooled = np.concatenate([cal.normal_scores["validation"][name], cal.normal_scores["crossfit"][name]])
        assert stats.threshold == pytest.approx(np.quantile(pooled, cal.quantile), rel=1e-12)
    # The option changes what the threshold rests on, nothing else: the bank, the validation scores, the choices.
    np.testing.assert_array_equal(loaded.parts["memory"].bank.numpy(), plain.parts["memory"].bank.numpy())
    assert (cal.selected_score, cal.sigma, cal.heat_threshold) == (plain.calibration.selected_score,
                                                                   plain.calibration.sigma,
                                                                   plain.calibration.heat_threshold)
    assert {n: s.max for n, s in cal.scores.items()} == {n: s.max for n, s in plain.calibration.scores.items()}
    assert plain.calibration.n_crossfit == 0 and plain.calibration.normal_scores == {}
    # Out of fold: the training images score higher than with the full bank, which holds their own patches.
    cfg = loaded.config
    stream = stream_for(cfg.data, "train", dataclasses.replace(PATCHCORE.input_spec(cfg), channels=3))
    scorer = loaded.scorer()
    col = scorer.names.index("patch_max")
    inside = [float(scorer.run(image_to_tensor(stream.read(i))[None])[0][0, col]) for i in range(len(stream))]
    assert np.mean(cal.normal_scores["crossfit"]["patch_max"]) > np.mean(inside)
    fa = cal.false_alarms(loaded.default_score)
    assert fa == false_alarm_estimate(N_TRAIN, cal.quantile, basis=cal.basis())


def test_calibrate_and_update_reuse_the_kept_scores(crossfitted, demo_root, demo_category, tmp_path, capsys):
    from scgan.commands.calibrate import recalibrate
    from scgan.commands.common import print_calibration
    from scgan.training.update import update_model

    old = load_model(crossfitted).calibration
    path, cal, _ = recalibrate(crossfitted, None, tmp_path / "recalibrated.pt")
    assert cal.normal_scores["crossfit"] == old.normal_scores["crossfit"] and cal.n_crossfit == old.n_crossfit
    assert {n: s.threshold for n, s in cal.scores.items()} == pytest.approx(
        {n: s.threshold for n, s in old.scores.items()}, rel=1e-6)
    _, tailed, _ = recalibrate(crossfitted, None, tmp_path / "tail.pt", {"score.tail": "gpd"})
    assert tailed.n_crossfit == old.n_crossfit and "too few for a tail fit" in tailed.tails["map_max"]["note"]
    new = demo_root / demo_category / "test" / "good"
    res = update_model(crossfitted, [new], tmp_path / "updated.pt")
    updated = load_model(res.path).calibration
    assert updated.normal_scores["crossfit"] == old.normal_scores["crossfit"]
    assert updated.n_images > old.n_images and updated.n_normal == updated.n_images + old.n_crossfit
    print_calibration(path)
    out = capsys.readouterr().out
    assert f"on {N_TRAIN} normal images ({old.n_images} validation, {old.n_crossfit} training images scored " \
           "cross-fitted)" in out


def test_each_out_of_fold_score_is_the_image_scored_by_a_bank_of_the_other_folds(tmp_path, demo_root, demo_category):
    """With room in every bank (nothing reduced), fold j's bank is every patch of the images outside fold j: each
    training image's kept score is then what the model's own scorer gives it with that bank, from its pixels
    (to float16's precision: the cross-fit scores the patches the fit's pass kept, not a second backbone pass)."""
    from scgan.data.datasets import stream_for
    from scgan.data.io import image_to_tensor
    from scgan.models.patchcore.kind import PATCHCORE, layout
    from scgan.models.patchcore.model import MemoryBank
    from scgan.training.crossfit import fold_assignment
    from scgan.training.fit import train
    from scgan.training.patchcore import patch_features

    cfg = load_config("default", overrides={**TINY_FEATURES, "data.root": str(demo_root),
                                            "data.category": demo_category, "score.threshold_source": "crossfit",
                                            "score.crossfit_folds": 3, "patchcore.bank_size": 20_000})
    loaded = load_model(train(cfg, tmp_path, progress=False).model_path)
    cal, space = loaded.calibration, loaded.parts["memory"]
    cfg = loaded.config
    stream = stream_for(cfg.data, "train", dataclasses.replace(PATCHCORE.input_spec(cfg), channels=3))
    backbone = loaded.scorer().backbone
    feats = [space.project(patch_features(backbone, layout(cfg), image_to_tensor(stream.read(i))[None]))
             for i in range(len(stream))]
    assert space.bank.shape[0] == sum(f.shape[0] for f in feats)  # the bank kept every patch: no merge reduced
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["crossfit_kept_mb"] == round(space.bank.numel() * 2 / 2**20, 1)  # float16, every patch once
    folds = fold_assignment(len(stream), 3, cfg.seed)
    whitening = (space.mean, space.whitening) if space.whitened else None
    for i in range(len(stream)):
        rows = torch.cat([f for j, f in enumerate(feats) if folds[j] != folds[i]])
        scorer = PATCHCORE.build_scorer(cfg, {"memory": MemoryBank(rows, space.digest, space.scale, whitening)})
        scorer.set_sigma(cal.sigma)
        got = scorer.eval().run(image_to_tensor(stream.read(i))[None])[0][0]
        kept = [cal.normal_scores["crossfit"][name][i] for name in scorer.names]
        np.testing.assert_allclose(kept, got.numpy(), rtol=2e-3, err_msg=f"image {i}")
