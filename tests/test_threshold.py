"""Thresholds that rest on every normal score: the generalised Pareto tail against known distributions, cross-fitted
scores pooled with the validation ones (kept, stated in the false-alarm estimate, read from files that predate them),
and the folds they are scored in."""
from __future__ import annotations

import numpy as np
import pytest

from scgan.calibration.stats import Calibration, false_alarm_estimate, fit_calibration
from scgan.calibration.tail import MIN_EXCEEDANCES, exceedance_count, fit_tail, needs_tail, tail_threshold
from scgan.config import load_config
from scgan.models.checks import check_config

pytestmark = pytest.mark.unit

NAMES = ("map_max", "patch_max")


def _quantile_tolerance(n: int, quantile: float) -> float:
    """Two standard errors of the tail's quantile estimate for unit-exponential scores: with k excesses and
    L = log(k / (n (1 - q))), the delta method at shape 0 gives se^2 = (1 + L^2 + L^4 / 4) / k (the threshold u,
    the scale and the shape, each estimated from k excesses, taken as independent: 0.75 at n = 4000, q = 0.9995,
    where 60 seeded samples spread by 0.51)."""
    k = exceedance_count(n)
    lever = np.log(k / (n * (1 - quantile)))
    return 2 * np.sqrt((1 + lever**2 + lever**4 / 4) / k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_tail_finds_an_exponential_quantile_beyond_the_data(seed):
    n, q = 4000, 0.9995  # two normal scores expected above the quantile: the data alone do not resolve it
    values = np.random.default_rng(seed).exponential(size=n)
    truth = -np.log(1 - q)
    found = tail_threshold(values, q, seed=seed)
    assert found.fit is not None and found.fit.exceedances == exceedance_count(n) == 400
    assert abs(found.threshold - truth) <= _quantile_tolerance(n, q)
    assert abs(found.fit.shape) < 0.2  # an exponential tail has shape 0
    assert found.above == int((values > found.threshold).sum())
    assert found.low <= 1 - q <= found.high  # the refits' interval holds the true rate


def test_the_tail_recovers_a_pareto_shape_and_its_own_quantile():
    from scipy.stats import genpareto

    values = genpareto.rvs(0.25, scale=2.0, size=5000, random_state=np.random.default_rng(3))
    fit = fit_tail(values)
    assert fit is not None and abs(fit.shape - 0.25) < 3 / np.sqrt(fit.exceedances)
    q = 1 - 0.5 / fit.n  # half a score expected above it
    assert fit.exceedance(fit.quantile(q)) == pytest.approx(1 - q, rel=1e-6)  # quantile and exceedance agree


def test_the_tail_stays_empirical_where_the_data_resolve_it_or_too_few_excesses_would_carry_it():
    values = np.random.default_rng(0).exponential(size=1000)
    resolved = tail_threshold(values, 0.99)  # ten expected above: resolved
    assert not needs_tail(1000, 0.99) and resolved.fit is None and "resolve" in resolved.note
    assert resolved.threshold == np.quantile(values, 0.99)
    few = tail_threshold(values[:MIN_EXCEEDANCES], 0.99)  # too few excesses for a fit: said so
    assert few.fit is None and "too few" in few.note and few.threshold == np.quantile(values[:MIN_EXCEEDANCES], 0.99)
    assert tail_threshold(values, 1.0).threshold == values.max()  # no tail has a finite 1 quantile


def test_crossfitted_scores_join_the_threshold_and_the_false_alarm_estimate_says_so():
    rng = np.random.default_rng(0)
    val, cross = rng.normal(size=(20, 2)), rng.normal(size=(180, 2)) + 0.5
    cal = fit_calibration(val, NAMES, 0.99, crossfit=cross)
    pooled = np.concatenate([val, cross])
    assert cal.scores["map_max"].threshold == pytest.approx(np.quantile(pooled[:, 0], 0.99))
    assert cal.scores["map_max"].max == val[:, 0].max()  # the normalisation stays the validation images'
    assert cal.n_images == 20 and cal.n_crossfit == 180 and cal.n_normal == 200
    fa = cal.false_alarms("map_max")
    assert (fa.n, fa.above) == (200, 2) and fa == false_alarm_estimate(200, 0.99, basis=cal.basis())
    assert "from 200 normal image(s) (20 validation, 180 training images scored cross-fitted)" in fa.sentence()
    np.testing.assert_array_equal(cal.normal_values("patch_max"), pooled[:, 1])
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal  # the kept scores survive the model file


def test_a_tail_threshold_reports_the_fits_rate_and_interval():
    rng = np.random.default_rng(1)
    val, cross = rng.exponential(size=(30, 2)), rng.exponential(size=(370, 2))
    cal = fit_calibration(val, NAMES, 0.999, crossfit=cross, tail="gpd")
    assert cal.tails["map_max"]["fit"] is not None
    assert cal.scores["map_max"].threshold == cal.tails["map_max"]["threshold"] > np.concatenate([val, cross]).max()
    fa = cal.false_alarms("map_max")
    assert fa.expected == pytest.approx(0.001) and fa.n == 400 and fa.low <= fa.expected <= fa.high
    assert "generalised Pareto tail of the 40 largest" in fa.sentence()
    alone = fit_calibration(val, NAMES, 0.999, tail="gpd")  # 30 validation scores: too few excesses, said so
    assert alone.tails["map_max"]["fit"] is None and "too few" in alone.tails["map_max"]["note"]
    assert alone.scores["map_max"].threshold == np.quantile(val[:, 0], 0.999)


def test_a_calibration_from_before_the_option_reads_and_decides_as_it_did():
    rng = np.random.default_rng(2)
    cal = fit_calibration(rng.normal(size=(25, 2)), NAMES, 0.99)
    old = {k: v for k, v in cal.to_dict().items() if k not in ("n_crossfit", "normal_scores", "tails")}
    read = Calibration.from_dict(old)
    assert read == cal and read.normal_scores == {} and read.normal_values("map_max") is None
    assert read.false_alarms() == false_alarm_estimate(25, 0.99)  # the same estimate, the same sentence
    assert "from 25 normal image(s), 1 of them above" in read.false_alarms().sentence()


def test_folds_are_balanced_seeded_and_cover_every_image():
    from scgan.training.crossfit import fold_assignment

    folds = fold_assignment(23, 5, seed=7)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert folds == fold_assignment(23, 5, seed=7) and folds != fold_assignment(23, 5, seed=8)
    assert sorted(set(fold_assignment(3, 5, seed=0))) == [0, 1, 2]  # fewer images than folds: one each


def test_a_fold_bank_holds_no_patch_of_its_own_fold_and_covers_the_others(tmp_path):
    """Each image's patches are its own rows (image i: rows near i * 10 along one axis), fed as the fit's pass feeds
    them; fold j's bank, merged from the other folds' banks, holds rows of every image outside fold j and none of
    fold j's, whether or not the merges had to reduce; each image's patches come back as fed (to float16)."""
    import torch

    from scgan.training.crossfit import FoldFeed
    from scgan.training.patchcore import bank_merger

    def features(index):
        rows = torch.zeros(6, 4)
        rows[:, 0] = index * 10.0
        rows[:, 1] = torch.arange(6) * 0.01  # near-copies: a reducing merge keeps about one per image
        return rows

    readable = [i for i in range(12) if i != 5]  # one unreadable image: it joins no bank
    for bank_size in (200, 12):  # room for every row; and a bank that has to choose (12 images, 12 rows)
        cfg = load_config("default", overrides={"patchcore.bank_size": bank_size,
                                                "patchcore.max_patches": max(24, bank_size),
                                                "patchcore.projection": 0, "score.crossfit_folds": 3})
        with FoldFeed(cfg, 12, bank_merger(cfg.patchcore, torch.Generator().manual_seed(0)), tmp_path) as feed:
            for i in readable:
                feed(i, features(i))
            banks = feed.banks()
            assert len(banks) == 3 and feed.merge_s > 0
            for j, bank in enumerate(banks):
                images = set((bank[:, 0] / 10).round().long().tolist())
                assert images == {i for i in readable if feed.folds[i] != j}, (bank_size, j)
                assert bank.shape[0] <= bank_size
            assert feed.patches(5) is None
            for i in readable:
                torch.testing.assert_close(feed.patches(i), features(i).half().float(), rtol=0, atol=0)
    # every readable image in fold 0: fold 0's bank is empty (crossfit_distances refuses it with its message)
    with FoldFeed(cfg, 12, bank_merger(cfg.patchcore, torch.Generator().manual_seed(0)), tmp_path) as feed:
        for i in range(12):
            if feed.folds[i] == 0:
                feed(i, features(i))
        banks = feed.banks()
    assert banks[0].shape[0] == 0 and all(b.shape[0] > 0 for b in banks[1:])


def test_a_training_image_gone_or_changed_while_fitting_stops_the_cross_fit_in_one_line(tmp_path):
    import torch
    from PIL import Image

    from scgan.data.datasets import ImageStream, Sample
    from scgan.data.io import InputSpec
    from scgan.models.patchcore.model import MemoryBank
    from scgan.training.crossfit import FoldFeed, crossfit_distances, crossfit_scores
    from scgan.training.patchcore import bank_merger

    cfg = load_config("default", overrides={"patchcore.resolution": 64, "patchcore.bank_size": 64,
                                            "patchcore.max_patches": 256, "score.crossfit_folds": 2,
                                            "patchcore.position_grid": 0, "score.default_score": "auto"})
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    for path in paths:
        Image.new("RGB", (64, 64)).save(path)
    stream = ImageStream([Sample(p, 0, None, "good") for p in paths], "x", "train", InputSpec(64, True, 32))
    space = MemoryBank(torch.randn(8, 152))

    def fed():
        feed = FoldFeed(cfg, 4, bank_merger(cfg.patchcore, torch.Generator().manual_seed(0)), tmp_path)
        for i in range(4):
            feed(i, torch.randn(8 * 8, 152, generator=torch.Generator().manual_seed(i)))  # a 64 px image's grid
        return feed

    with fed() as feed:
        assert crossfit_scores(cfg, crossfit_distances(cfg, stream, feed), space, 4.0).scores.shape[0] == 4
    Image.new("RGB", (128, 64)).save(paths[1])  # another size than the one fitted
    with fed() as feed, pytest.raises(RuntimeError, match=r"kept 64 patches of .*1\.png, but its 64 x 128 px image "
                                                          "makes 8 x 16: did it change while fitting"):
        crossfit_distances(cfg, stream, feed)
    paths[1].unlink()
    with fed() as feed, pytest.raises(RuntimeError, match=r"could not open .*1\.png again"):
        crossfit_distances(cfg, stream, feed)


def test_kept_patches_beyond_float16_keep_their_values(tmp_path):
    import torch

    from scgan.training.crossfit import FoldFeed
    from scgan.training.patchcore import bank_merger

    cfg = load_config("default", overrides={"patchcore.bank_size": 8, "patchcore.max_patches": 16})
    with FoldFeed(cfg, 4, bank_merger(cfg.patchcore, torch.Generator().manual_seed(0)), tmp_path) as feed:
        big = torch.tensor([[1e6, 0.1], [3.0, -7e5]])
        feed(0, big)
        feed(1, torch.ones(2, 2))
        assert torch.equal(feed.patches(0), big) and torch.equal(feed.patches(1), torch.ones(2, 2))
    with pytest.raises(ValueError, match="at least 2 normal training images"):
        FoldFeed(cfg, 1, bank_merger(cfg.patchcore, torch.Generator()), tmp_path)


def test_crossfit_is_refused_for_a_kind_that_does_not_offer_it_and_bad_values_are_named():
    with pytest.raises(ValueError, match="threshold_source = crossfit needs a kind"):
        check_config(load_config("paper", overrides={"score.threshold_source": "crossfit"}))
    with pytest.raises(ValueError, match="score.tail must be one of none, gpd"):
        load_config("default", overrides={"score.tail": "pareto"}).validate()
    with pytest.raises(ValueError, match="crossfit_folds must be >= 2"):
        load_config("default", overrides={"score.crossfit_folds": 1}).validate()
    cfg = check_config(load_config("default", overrides={"score.threshold_source": "crossfit", "score.tail": "gpd"}))
    assert (cfg.score.threshold_source, cfg.score.tail, cfg.score.crossfit_folds) == ("crossfit", "gpd", 5)


def test_a_kind_chosen_over_the_default_preset_takes_the_validation_threshold_unless_crossfit_is_asked_for(tmp_path):
    """The default preset cross-fits its own kind's threshold and scores by map_z; kind=scgan over it (command line or
    file) gets the threshold source's and the score's own defaults, which every kind offers; asked for in the same
    breath, crossfit or map_z is refused."""
    assert load_config("default").score.threshold_source == "crossfit"
    assert load_config("default", overrides={"kind": "patchcore"}).score.threshold_source == "crossfit"
    for overrides in ({"kind": "scgan"}, {"model.kind": "scgan", "seed": 3}):
        cfg = check_config(load_config("default", overrides=overrides))
        assert (cfg.kind, cfg.score.threshold_source, cfg.score.default_score) == ("scgan", "validation", "auto")
    # the preset's score (map_z, a patchcore score) likewise; asked for, it is refused for a kind without it
    assert load_config("default", overrides={"kind": "patchcore"}).score.default_score == "map_z"
    with pytest.raises(ValueError, match="default_score 'map_z' is not a score of this model"):
        check_config(load_config("default", overrides={"kind": "scgan", "score.default_score": "map_z"}))
    (tmp_path / "c.yaml").write_text("preset: default\nkind: scgan\n")
    assert load_config(yaml_path=tmp_path / "c.yaml").score.threshold_source == "validation"
    # a cross-fit that a file asked for outlives a kind= given after it, towards a kind that offers it
    (tmp_path / "x.yaml").write_text("score:\n  threshold_source: crossfit\n")
    cfg = check_config(load_config("paper", yaml_path=tmp_path / "x.yaml", overrides={"kind": "patchcore"}))
    assert (cfg.kind, cfg.score.threshold_source) == ("patchcore", "crossfit")
    with pytest.raises(ValueError, match="threshold_source = crossfit needs a kind"):  # asked for, not the preset's
        check_config(load_config("default", yaml_path=tmp_path / "x.yaml", overrides={"kind": "scgan"}))
    # back to the preset's kind: the preset's threshold source again
    cfg = load_config("default", yaml_path=tmp_path / "c.yaml", overrides={"kind": "patchcore"})
    assert (cfg.kind, cfg.score.threshold_source) == ("patchcore", "crossfit")
    for given in ({"score.threshold_source": "crossfit"}, {"threshold_source": "crossfit"},
                  {"score": {"threshold_source": "crossfit"}}):
        with pytest.raises(ValueError, match="threshold_source = crossfit needs a kind"):
            check_config(load_config("default", overrides={"kind": "scgan", **given}))


def test_kept_crossfit_scores_come_back_in_the_scorers_order_and_only_at_their_sigma(caplog):
    from scgan.inference.calibrate import kept_crossfit

    rng = np.random.default_rng(4)
    cal = fit_calibration(rng.normal(size=(10, 2)), NAMES, 0.99, crossfit=rng.normal(size=(40, 2)))
    cal.sigma = 5.0
    kept = kept_crossfit(cal)
    np.testing.assert_array_equal(kept(5.0, ("patch_max", "map_max")),
                                  np.stack([cal.normal_scores["crossfit"][n] for n in ("patch_max", "map_max")], 1))
    with caplog.at_level("WARNING", logger="scgan"):
        assert kept(2.5, NAMES) is None  # map_max was smoothed at another sigma: dropped, and said
    assert "computed at sigma 5, not 2.5" in caplog.text
    with pytest.raises(ValueError, match="no cross-fitted seg_max"):
        kept(5.0, ("seg_max",))
    assert kept_crossfit(fit_calibration(rng.normal(size=(10, 2)), NAMES, 0.99)) is None and kept_crossfit(None) is None


def test_the_test_says_what_the_threshold_rests_on_cross_fitted_images_included():
    from scgan.commands.common import decision_lines

    d = {"threshold": 2.0, "caught": 3, "defective": 4, "false_alarms": 0, "normal": 5, "catch_rate": 0.75,
         "false_alarm_rate": 0.0, "by_defect": {}, "quantile": 0.99, "calibration_images": 10,
         "expected_false_alarm_rate": 0.02, "expected_false_alarm_interval": [0.002, 0.054]}
    m = {"default_score": "map_max", "at_threshold": d}
    assert "expected from 10 normal validation image(s): 2.0%" in decision_lines(m)[0]
    d["crossfit_images"] = 90
    assert ("expected from 100 normal images (10 validation, 90 training images scored cross-fitted): 2.0%"
            in decision_lines(m)[0])
