"""Calibration on normal validation images: thresholds, normalisation, and the 'auto' score choice."""
import numpy as np
import pytest

from scgan.calibration.stats import Calibration, fit_calibration, separation_auroc
from scgan.models.scgan.kind import SCORE_PREFERENCE

pytestmark = pytest.mark.unit

SCORE_NAMES = ("as", "l_con", "l_enc", "map_max")  # a head-less model's scores


def _scores(**cols):
    n = len(next(iter(cols.values())))
    return np.stack([np.asarray(cols.get(k, np.zeros(n)), dtype=float) for k in SCORE_NAMES], axis=1)


def test_threshold_and_normalisation_from_normal_scores():
    normal = _scores(map_max=np.linspace(1, 2, 101), l_con=np.linspace(0, 1, 101))
    cal = fit_calibration(normal, SCORE_NAMES, quantile=0.99, preference=SCORE_PREFERENCE)
    assert cal.scores["map_max"].threshold == pytest.approx(1.99)
    assert cal.normalize("map_max", np.array([1.0, 2.0, 3.0])).tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert cal.decide("map_max", np.array([1.5, 1.995])).tolist() == [False, True]
    assert cal.map_high == pytest.approx(2.0)
    assert cal.selected_score is None and cal.resolve("auto", SCORE_PREFERENCE) == "map_max" \
        and cal.resolve("l_con") == "l_con"


def test_auto_picks_the_score_that_separates_synthetic_defects():
    rng = np.random.default_rng(0)
    normal = _scores(**{k: rng.normal(0, 1, 40) for k in SCORE_NAMES})
    synthetic = _scores(**{k: rng.normal(0, 1, 40) for k in SCORE_NAMES})
    synthetic[:, SCORE_NAMES.index("l_con")] += 5  # only l_con sees the defects
    cal = fit_calibration(normal, SCORE_NAMES, 0.99, synthetic)
    assert cal.selected_score == "l_con" and cal.resolve("auto") == "l_con"
    assert cal.selection["l_con"] > 0.99 and cal.selection["l_enc"] < 0.8
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal


def test_auroc_ties_go_to_the_larger_margin_then_the_local_score():
    normal = _scores(**{k: [0.0, 1.0, 2.0] for k in SCORE_NAMES})
    synthetic = _scores(**{k: [3.0, 3.0, 3.0] for k in SCORE_NAMES})
    # A full tie: the kind's preference order decides.
    assert fit_calibration(normal, SCORE_NAMES, 0.99, synthetic, preference=SCORE_PREFERENCE).selected_score \
        == "map_max"
    synthetic[:, SCORE_NAMES.index("l_con")] = 9.0  # same AUROC (1.0), larger margin
    cal = fit_calibration(normal, SCORE_NAMES, 0.99, synthetic)
    assert cal.selection["l_con"] == cal.selection["map_max"] == 1.0
    assert cal.selection_margin["l_con"] > cal.selection_margin["map_max"] and cal.selected_score == "l_con"


def test_separation_auroc_counts_ties_half():
    a = _scores(**{k: [0.0, 1.0] for k in SCORE_NAMES})
    b = _scores(**{k: [1.0, 2.0] for k in SCORE_NAMES})
    assert separation_auroc(a, b, SCORE_NAMES)["as"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_old_calibration_dicts_still_load():
    d = fit_calibration(np.zeros((3, len(SCORE_NAMES))), SCORE_NAMES, 0.9).to_dict()
    for key in ("selection", "selection_margin", "selected_score"):
        d.pop(key)
    assert Calibration.from_dict(d).resolve("auto", SCORE_PREFERENCE) == "map_max"


def test_sigma_auto_prefers_smoothing_for_blob_defects_in_pixel_noise():
    import torch

    from scgan.inference.calibrate import select_sigma, sigma_candidates

    g = torch.Generator().manual_seed(0)
    normal = torch.rand(8, 1, 32, 32, generator=g)  # i.i.d. pixel noise: single pixels stand out
    synthetic = torch.rand(8, 1, 32, 32, generator=g)
    masks = torch.zeros(8, 1, 32, 32, dtype=torch.bool)
    masks[:, :, 10:18, 10:18] = True
    synthetic[masks] += 0.3  # a weak but extended defect: averaging over its area finds it
    cands = sigma_candidates(64)
    assert cands[0] == 1.0 and sorted(cands) == [0.0, 0.5, 1.0, 2.0, 4.0]
    sigma, aurocs = select_sigma(normal, synthetic, masks, cands)
    assert set(aurocs) == {"0", "0.5", "1", "2", "4"}
    assert sigma > 0 and aurocs[f"{sigma:g}"] == max(aurocs.values()) and aurocs["0"] < aurocs[f"{sigma:g}"]


def test_sigma_auto_prefers_no_smoothing_for_single_pixel_defects():
    import torch

    from scgan.inference.calibrate import select_sigma, sigma_candidates

    normal = torch.zeros(4, 1, 32, 32)
    normal[:, :, 4:28, 4:28] = 0.5  # smooth structure, no pixel noise
    synthetic = normal.clone()
    masks = torch.zeros(4, 1, 32, 32, dtype=torch.bool)
    masks[:, :, 3, ::4] = True  # isolated pixels just outside the structure
    synthetic[masks] = 0.6
    sigma, aurocs = select_sigma(normal, synthetic, masks, sigma_candidates(64))
    assert sigma == 0.0 and aurocs["0"] == 1.0


def test_sigma_auto_ties_and_degenerate_masks_keep_the_default():
    import torch

    from scgan.inference.calibrate import select_sigma, sigma_candidates

    flat = torch.ones(2, 1, 16, 16)
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:8, 4:8] = True
    sigma, aurocs = select_sigma(flat, flat, masks, sigma_candidates(64))  # every candidate scores 0.5
    assert sigma == 1.0 and set(aurocs.values()) == {0.5}
    assert select_sigma(flat, flat, torch.zeros_like(masks), sigma_candidates(128)) == (2.0, {})


def test_sigma_auto_keeps_every_smoothed_score_at_the_chosen_sigma():
    """Choosing sigma changes every score of a smoothed map, the SCGAN's ssim_max and msgms_max beside map_max: the
    calibration's largest normal score of each equals a fresh scoring's at the chosen sigma (an untrained generator:
    what it restores does not matter here)."""
    import torch

    from scgan.config import load_config
    from scgan.inference.calibrate import calibrate
    from scgan.models.scgan.networks import build_generator
    from scgan.models.scgan.scorer import build_scorer

    torch.manual_seed(0)
    cfg = load_config("cpu", overrides=["score.sigma=auto"])
    scorer = build_scorer(cfg, build_generator(cfg.model).eval())
    x = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.6 - 0.3
    x = x + torch.linspace(-0.5, 0.5, 64)[None, None, None, :]
    start = scorer.sigma
    cal = calibrate(scorer, [{"image": x[i:i + 8]} for i in (0, 8)], cfg)
    assert cal.sigma == scorer.sigma != start  # another sigma than the one it started from
    with torch.no_grad():
        scores = scorer.run(x)[0]
    for name in ("map_max", "ssim_max", "msgms_max"):
        assert float(scores[:, scorer.names.index(name)].max()) == pytest.approx(cal.scores[name].max, abs=1e-6)



def test_auto_over_several_strengths_averages_their_aurocs():
    """With defects at several strengths, each score's separation is its mean AUROC (and mean margin) over
    them; one strength given as a dict is the same as the plain array."""
    rng = np.random.default_rng(1)
    normal = _scores(**{k: rng.normal(0, 1, 30) for k in SCORE_NAMES})
    full = _scores(**{k: rng.normal(0, 1, 30) for k in SCORE_NAMES})
    faint = full.copy()
    full[:, [1, 3]] += 10  # l_con and map_max both saturate at full strength
    faint[:, 1] += 10  # only l_con still separates faint defects
    faint[:, 3] += 0.5
    one = fit_calibration(normal, SCORE_NAMES, 0.99, full)
    assert one == fit_calibration(normal, SCORE_NAMES, 0.99, {1.0: full}) and not one.selection_by_strength
    assert one.selection == separation_auroc(normal, full, SCORE_NAMES)  # one strength: the plain AUROC
    assert one.selection["l_con"] == one.selection["map_max"] == 1.0
    half = fit_calibration(normal, SCORE_NAMES, 0.99, {0.5: faint})
    assert set(half.selection_by_strength) == {"0.5"}  # a single strength other than 1 is recorded
    two = fit_calibration(normal, SCORE_NAMES, 0.99, {1.0: full, 0.25: faint})
    assert two.selected_score == "l_con"
    assert set(two.selection_by_strength) == {"1", "0.25"}
    assert two.selection_by_strength["1"] == one.selection
    low = separation_auroc(normal, faint, SCORE_NAMES)
    for n in SCORE_NAMES:
        assert two.selection[n] == pytest.approx((one.selection[n] + low[n]) / 2)
    assert Calibration.from_dict(two.to_dict()) == two



@pytest.mark.parametrize("n,quantile", [(21, 0.99), (76, 0.99), (200, 0.95)])
def test_the_expected_false_alarm_rate_matches_a_simulation(n, quantile):
    """The distribution-free estimate against draws: thresholds set on n normal scores, the share of new normal
    scores above each (its mean and 95% interval), here for an exponential. Between two order statistics the
    estimate mixes their two laws, which errs on the side of more false alarms (by up to about a tenth)."""
    from scgan.calibration.stats import false_alarm_estimate

    rng = np.random.default_rng(0)
    thresholds = np.quantile(rng.exponential(size=(4000, n)), quantile, axis=1)
    rates = np.exp(-thresholds)  # P(a new exponential score > t)
    e = false_alarm_estimate(n, quantile)
    assert rates.mean() <= e.expected <= 1.15 * rates.mean()
    assert e.low == pytest.approx(np.quantile(rates, 0.025), abs=0.004)
    assert e.high == pytest.approx(np.quantile(rates, 0.975), rel=0.15)
    assert e.n == n and e.above == n - 1 - int(np.floor((n - 1) * quantile))


def test_the_false_alarm_sentence_says_what_it_rests_on():
    from scgan.calibration.stats import false_alarm_estimate

    text = false_alarm_estimate(76, 0.99).sentence()
    assert text.startswith("false alarms expected on 2.3% of normal images (95% interval 0.1-6.8%)")
    assert text.endswith("from 76 normal image(s), 1 of them above the threshold")
