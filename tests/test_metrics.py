"""Metrics on hand-checkable cases, against sklearn, and AUPRO's invariants."""
import math
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scgan.evaluation.metrics import aupro, compute_metrics, f1_max, image_auroc, pixel_auroc, pro_curve

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------- image level

def test_image_auroc_hand_cases():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0  # perfect separation
    assert image_auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0  # reversed
    assert image_auroc(np.full(4, 0.5), labels) == 0.5  # all tied: each pair counts one half
    # Pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>both yes yes -> 3 of 4.
    assert image_auroc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == pytest.approx(0.75)


def test_image_metrics_single_class_are_nan_not_errors():
    s = np.array([0.1, 0.5, 0.9])
    assert math.isnan(image_auroc(s, np.zeros(3)))
    assert math.isnan(image_auroc(s, np.ones(3)))
    assert math.isnan(f1_max(s, np.zeros(3)))
    assert f1_max(s, np.ones(3)) == 1.0  # all positive: flagging everything is perfect


def test_f1_max_hand_case():
    # Sorted scores 0.9 .. 0.5 with labels 1 0 1 0 0. Flagging the top k:
    # k=1: P=1, R=1/2 -> 2/3; k=2: P=R=1/2 -> 1/2; k=3: P=2/3, R=1 -> 0.8; k=4: 2/3; k=5: 4/7.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 0])
    assert f1_max(scores, labels) == pytest.approx(0.8)
    assert f1_max(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        image_auroc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        image_auroc(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="one length"):
        f1_max(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))


# ---------------------------------------------------------------- pixel AUROC

def test_pixel_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), bool)
    masks[1, 5:15, 5:12] = True
    masks[3, 20:30, 2:30] = True
    maps = rng.random(masks.shape) + 0.7 * masks  # informative but overlapping
    maps = np.round(maps, 2)  # create ties
    ours = pixel_auroc(maps, masks)
    ref = roc_auc_score(masks.ravel(), maps.ravel())
    assert 0.6 < ref < 0.99
    assert ours == pytest.approx(ref, abs=1e-5)


def test_pixel_auroc_of_maps_far_outside_0_1_is_their_ranking():
    """Feature-distance maps run 20-50; read as logits they would all squash to one value (AUROC 0.5)."""
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 4:9, 4:9] = True
    maps = 22.0 + rng.random(masks.shape) + 25.0 * masks
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6) == 1.0
    assert pixel_auroc(-maps, masks) == pytest.approx(0.0, abs=1e-6)
    assert pixel_auroc(np.full(masks.shape, 40.0), masks) == pytest.approx(0.5)


def test_pixel_auroc_single_class_is_nan():
    assert math.isnan(pixel_auroc(np.random.rand(2, 8, 8), np.zeros((2, 8, 8), bool)))
    assert math.isnan(pixel_auroc(np.random.rand(2, 8, 8), np.ones((2, 8, 8), bool)))


# ---------------------------------------------------------------- AUPRO

def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Two 3x3 images: a diagonal pair (one component under 8-connectivity) and a corner pixel."""
    maps = np.zeros((2, 3, 3))
    masks = np.zeros((2, 3, 3), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # component C1, 2 pixels (touching at a corner)
    masks[1, 2, 2] = True  # component C2, 1 pixel
    maps[0, 0, 0], maps[0, 1, 1], maps[1, 2, 2] = 0.9, 0.5, 0.7
    maps[0, 0, 1], maps[1, 0, 0], maps[0, 2, 0] = 0.8, 0.5, 0.4  # three scored normal pixels; 12 more at 0
    return maps, masks


def test_aupro_hand_computed_case():
    # K = 2 components; 15 normal pixels. Weights: C1 pixels 1/(2*2) = 1/4 each, C2 pixel 1/2.
    # Thresholds falling: 0.9 (C1) -> PRO 1/4; 0.8 (normal) -> FPR 1/15; 0.7 (C2) -> PRO 3/4;
    # 0.5 (tie: one normal and C1's other pixel) -> FPR 2/15 and PRO 1 together (a diagonal segment);
    # 0.4 (normal) -> FPR 3/15; 0 -> FPR 1.
    # Curve: (0,0) (0,1/4) (1/15,1/4) (1/15,3/4) (2/15,1) (3/15,1) (1,1); pro_curve returns its vertices, each
    # anomalous value's point just above it and at it (the collinear (3/15, 1) is not one of them).
    # fpr_limit 0.1 = 1.5/15: area = 1/4 * 1/15 + 0.5/15 * (3/4 + 7/8)/2 = (0.25 + 0.40625)/15;
    #   normalised by 1.5/15 -> 0.65625 / 1.5 = 7/16.
    # fpr_limit 0.2 = 3/15: area = (0.25 + (0.75 + 1)/2 + 1)/15 = 2.125/15 -> 2.125/3 = 17/24.
    # (With 4-connectivity K would be 3, each pixel weighing 1/3, and the first result 17/36 = 0.472.)
    maps, masks = _hand_case()
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 15, 1 / 15, 1 / 15, 2 / 15, 1])
    np.testing.assert_allclose(pro, [0, 0, 0.25, 0.25, 0.75, 0.75, 1, 1])
    assert aupro(maps, masks, fpr_limit=0.1) == pytest.approx(7 / 16)
    assert aupro(maps, masks, fpr_limit=0.2) == pytest.approx(17 / 24)
    # A fine threshold grid lands on the same values here (all scores are multiples of 0.1).
    assert aupro(maps, masks, fpr_limit=0.1, num_thresholds=1001) == pytest.approx(7 / 16)
    assert aupro(maps, masks, fpr_limit=0.2, num_thresholds=1001) == pytest.approx(17 / 24)


def _blob_masks(n: int = 6, size: int = 48) -> np.ndarray:
    masks = np.zeros((n, size, size), bool)
    masks[1, 5:15, 8:20] = True
    masks[2, 30:33, 2:40] = True
    masks[2, 10, 10] = True
    masks[4, 20:40, 20:30] = True
    return masks  # images 0, 3, 5 are normal


def test_aupro_perfect_inverted_and_random():
    masks = _blob_masks()
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0, abs=1e-12)
    # Many mid-sized components, so each one's PRO curve is close to its expectation.
    grid_masks = np.zeros((8, 64, 64), bool)
    for r in range(3):
        for c in range(3):
            grid_masks[::2, 5 + 20 * r:13 + 20 * r, 5 + 20 * c:13 + 20 * c] = True  # 36 components of 64 px
    rng = np.random.default_rng(0)
    random_maps = rng.random(grid_masks.shape)
    # PRO(t) ~ FPR(t) for a random map, so the normalised area is ~ fpr_limit / 2.
    for limit in (0.3, 0.1):
        assert aupro(random_maps, grid_masks, fpr_limit=limit) == pytest.approx(limit / 2, abs=0.02)
    # A threshold grid approximates the exact curve.
    exact = aupro(random_maps, grid_masks)
    assert aupro(random_maps, grid_masks, num_thresholds=200) == pytest.approx(exact, abs=0.005)


def _dense_pro_area(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """The PRO curve with a point at every distinct map value, from a per-pixel weight array (a reference)."""
    from scipy import ndimage

    weights = np.zeros(masks.shape)
    k = 0
    for i, mask in enumerate(masks):
        labeled, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labeled.ravel()).astype(float)
        weights[i][mask] = 1.0 / sizes[labeled[mask]]
        k += n
    order = np.argsort(maps.ravel(), kind="stable")[::-1]
    values = maps.ravel()[order]
    pro = np.cumsum(weights.ravel()[order]) / k
    fpr = np.cumsum(~masks.ravel()[order]) / (~masks).sum()
    last = np.r_[np.flatnonzero(values[1:] != values[:-1]), values.size - 1]
    x, y = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    j = keep.sum()
    if j < x.size and xs[-1] < limit:
        ys = np.r_[ys, y[j - 1] + (limit - x[j - 1]) / (x[j] - x[j - 1]) * (y[j] - y[j - 1])]
        xs = np.r_[xs, limit]
    return float(np.trapezoid(ys, xs)) / limit


@pytest.mark.parametrize("levels", [None, 7])  # continuous values, and few levels: ties of normal and anomalous
def test_exact_pro_curve_equals_a_point_at_every_value(levels):
    rng = np.random.default_rng(3)
    masks = _blob_masks()
    maps = rng.random(masks.shape) + 0.3 * masks
    if levels:
        maps = np.round(maps * levels) / levels
    for limit in (0.05, 0.3, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(_dense_pro_area(maps.astype(np.float32), masks,
                                                                                     limit), abs=1e-9)


def test_aupro_without_anomalies_is_nan():
    masks = np.zeros((3, 8, 8), bool)
    assert math.isnan(aupro(np.random.rand(3, 8, 8), masks))


def test_aupro_honours_fpr_limit_and_counts_normal_images():
    masks = _blob_masks()
    maps = masks.astype(float)
    n_normal = int((~masks).sum())
    k = 400  # normal pixels of the anomaly-free image 0 scored above every anomalous pixel
    maps[0].ravel()[:k] = 2.0
    f = k / n_normal  # the FPR reached before any anomalous pixel counts (~0.034)
    # Curve: (0,0) -> (f,0) -> (f,1) -> (1,1); normalised area (L - f) / L, or 0 when L <= f.
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx((0.3 - f) / 0.3)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(1 - f)
    assert aupro(maps, masks, fpr_limit=f * 0.9) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=0.0)


# ---------------------------------------------------------------- compute_metrics

def test_compute_metrics_keys_and_single_class():
    rng = np.random.default_rng(1)
    masks = _blob_masks()
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = labels + 0.1 * rng.random(len(labels))
    maps = masks + 0.1 * rng.random(masks.shape)
    m = compute_metrics(scores, labels, maps, masks)
    assert set(m) == {"image_auroc", "f1_max", "pixel_auroc", "aupro"}
    assert m["image_auroc"] == 1.0 and m["f1_max"] == 1.0
    assert m["pixel_auroc"] == pytest.approx(1.0) and m["aupro"] == pytest.approx(1.0)
    assert set(compute_metrics(scores, labels)) == {"image_auroc", "f1_max"}

    normal_only = compute_metrics(scores[[0, 3, 5]], np.zeros(3), maps[[0, 3, 5]], masks[[0, 3, 5]])
    assert all(math.isnan(v) for v in normal_only.values())
    with pytest.raises(ValueError, match="both maps and masks"):
        compute_metrics(scores, labels, maps=maps)


@pytest.mark.slow
def test_pixel_metrics_scale_to_millions_of_pixels():
    rng = np.random.default_rng(0)
    masks = np.zeros((64, 256, 256), bool)  # 4.2 M pixels
    masks[::2, 100:140, 50:120] = True
    maps = (rng.random(masks.shape, dtype=np.float32) + 0.3 * masks).astype(np.float32)
    t = time.perf_counter()
    assert 0.6 < pixel_auroc(maps, masks) < 0.95
    assert 0.0 < aupro(maps, masks) < 1.0
    assert time.perf_counter() - t < 20


# ---------------------------------------------------------------- per defect type

def test_pixel_auroc_by_defect_on_hand_made_maps():
    """Type A lights up exactly where marked; type B's large region is dark and a normal image's peak outshines it:
    B holds most of the marked pixels, so it sets the pixel AUROC of all images together."""
    from scgan.evaluation.metrics import pixel_auroc_by_defect

    maps = np.zeros((4, 8, 8), np.float32)
    masks = np.zeros((4, 8, 8), bool)
    maps[0, 0, 0] = 0.5  # a normal image's peak
    masks[1, 2:4, 2:4] = True  # A: 4 pixels, lit at 1
    maps[1, 2:4, 2:4] = 1.0
    masks[2, :, :6] = True  # B: 48 pixels at 0.25, its unmarked pixels at 0.3
    maps[2, :, :6] = 0.25
    maps[2, :, 6:] = 0.3
    labels = np.array([0, 1, 1, 0])
    got = pixel_auroc_by_defect(maps, masks, labels, ["good", "A", "B", "good"])
    assert list(got) == ["A", "B"]
    assert got["A"] == {"images": 1, "pixel_share": 4 / 52, "pixel_auroc": 1.0}
    # B: its 48 pixels lie above the 127 zeros of the normal images, below the normal peak and its own 16 at 0.3
    assert got["B"]["pixel_share"] == 48 / 52
    assert got["B"]["pixel_auroc"] == pytest.approx(pixel_auroc(maps[[0, 3, 2]], masks[[0, 3, 2]]))
    assert got["B"]["pixel_auroc"] == pytest.approx(127 / 144)
    assert pixel_auroc(maps, masks) < got["A"]["pixel_auroc"]
    with pytest.raises(ValueError, match="3 defect names"):
        pixel_auroc_by_defect(maps, masks, labels, ["good", "A", "B"])
    with pytest.raises(ValueError, match=r"0 \(normal\) or 1 \(defective\), got \[2\]"):
        pixel_auroc_by_defect(maps, masks, np.array([0, 1, 2, 0]), ["good", "A", "B", "good"])


def test_pixel_auroc_by_defect_skips_types_without_marked_pixels():
    from scgan.evaluation.metrics import pixel_auroc_by_defect

    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    masks = np.zeros((3, 4, 4), bool)
    masks[1, 0, 0] = True
    got = pixel_auroc_by_defect(maps, masks, np.array([0, 1, 1]), ["good", "A", "no_mask"])
    assert list(got) == ["A"] and got["A"]["pixel_share"] == 1.0
