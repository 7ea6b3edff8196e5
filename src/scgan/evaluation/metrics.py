"""Evaluation metrics (SPEC section 5): image AUROC, F1-max, pixel AUROC and AUPRO.

Every metric returns ``float('nan')`` rather than raising when it is undefined for the input
(a single class, no anomalous pixel), so a run on an odd split still writes its other numbers.
Malformed input (wrong shapes, NaN or infinite scores) raises ``ValueError``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

# MVTec AD's reference AUPRO labels components with a 3x3 ones structure: 8-connectivity, so
# pixels touching only at a corner belong to one defect.
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N,) scores and (N,) 0/1 labels; return them as float64 and bool."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got shapes {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model output before evaluating")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values {np.unique(y)[:10].tolist()}")
    return s, y.astype(bool)


def _check_maps(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W) maps and masks of one shape; return float32 maps and bool masks."""
    m = np.asarray(maps, dtype=np.float32)
    g = np.asarray(masks)
    if m.ndim != 3 or g.shape != m.shape:
        raise ValueError(
            f"anomaly maps and masks must both be (N, H, W) of one shape, got {m.shape} and {g.shape}; "
            "resize the maps to the mask size first"
        )
    if not np.isfinite(m).all():
        raise ValueError("anomaly maps contain NaN or infinite values; check the model output before evaluating")
    return m, g.astype(bool)


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of (N,) image scores against (N,) 0/1 labels; nan with one class."""
    s, y = _check_scores(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def f1_max(scores: np.ndarray, labels: np.ndarray) -> float:
    """Best F1 over all thresholds of (N,) scores against (N,) 0/1 labels; nan without a positive."""
    s, y = _check_scores(scores, labels)
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """AUROC over all pixels of (N, H, W) anomaly maps against (N, H, W) bool masks; nan with one class."""
    m, g = _check_maps(maps, masks)
    if g.all() or not g.any():
        return float("nan")
    # The Mann-Whitney form, exact with ties counted half: only the normal pixels' values are sorted (one float32
    # copy), and each anomalous pixel counts the normal ones below it. A test set's 38 M pixels need about 0.2 GB
    # here against torchmetrics' sort with indices (1.8 GB), and no value is read as a logit.
    return _mann_whitney([np.sort(m[~g])], m[g])


def _mann_whitney(negatives: list[np.ndarray], positives: np.ndarray) -> float:
    """AUROC of ``positives`` against the union of the sorted arrays ``negatives`` (ties counted half)."""
    n = sum(a.size for a in negatives)
    if n == 0 or positives.size == 0:
        return float("nan")
    below = sum(np.searchsorted(a, positives, side="left").sum(dtype=np.float64) for a in negatives)
    upto = sum(np.searchsorted(a, positives, side="right").sum(dtype=np.float64) for a in negatives)
    return float((below + 0.5 * (upto - below)) / (float(n) * float(positives.size)))


def pixel_auroc_by_defect(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray,
                          defects: list[str]) -> dict[str, dict[str, float | int]]:
    """Per defect type with marked pixels: the pixel AUROC of its images and every normal image ((N, H, W) maps and
    bool masks, (N,) labels, N defect names), and its share of all marked pixels: which defects set the pixel AUROC.
    The normal images' unmarked pixels are sorted once for every type (a pixel marked on a normal image belongs to
    no type, and counts on neither side); nan where a type's images and the normal ones hold no unmarked pixel."""
    m, g = _check_maps(maps, masks)
    labels = np.asarray(labels)
    if len(labels) != len(m) or len(defects) != len(m):
        raise ValueError(f"got {len(m)} maps for {len(labels)} labels and {len(defects)} defect names")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (defective), got {sorted(set(labels.tolist()) - {0, 1})}")
    marked = g.reshape(len(g), -1).sum(1)
    total = int(marked[labels == 1].sum())
    normal_rows = labels == 0
    normal = np.sort(m[normal_rows][~g[normal_rows]])
    out: dict[str, dict[str, float | int]] = {}
    for name in sorted({d for d, y, k in zip(defects, labels, marked) if y == 1 and k}):
        rows = (labels == 1) & (np.asarray(defects) == name) & (marked > 0)
        own = np.sort(m[rows][~g[rows]])  # the type's own unmarked pixels are negatives too
        out[name] = {"images": int(rows.sum()), "pixel_share": float(marked[rows].sum() / total),
                     "pixel_auroc": _mann_whitney([normal, own], m[rows][g[rows]])}
    return out


def _anomalous_pixels(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The map values of the anomalous pixels, each pixel's weight 1 / size of its connected component (both
    (P,), in image order), and the component count. Only the P anomalous pixels are held, not an (N, H, W) array."""
    scores, weights = [], []
    n_components = 0
    for amap, mask in zip(maps, masks):
        labeled, n = ndimage.label(mask, structure=_CONNECTIVITY)
        if n == 0:
            continue
        sizes = np.bincount(labeled.ravel()).astype(np.float64)  # sizes[0] is the background
        scores.append(amap[mask])
        weights.append(1.0 / sizes[labeled[mask]])
        n_components += n
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0), 0
    return np.concatenate(scores), np.concatenate(weights), n_components


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, num_thresholds: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO of (N, H, W) maps and masks as thresholds fall: two arrays from (0, 0) to (1, PRO at the lowest).

    PRO(t) is the mean over all connected components of the share of their pixels with map >= t;
    FPR(t) the share of normal pixels (all images) with map >= t. Each anomalous pixel thus
    carries weight 1 / (K * component size) and each normal one 1 / (number of normal pixels), so
    the curve is a weighted ROC curve. Without ``num_thresholds`` the curve is exact: its vertices are, for each
    distinct value v of an anomalous pixel, (FPR, PRO) just above v and at v (a tie of normal and anomalous
    pixels is a diagonal segment); between them only normal pixels pass, along a horizontal line. Otherwise
    ``num_thresholds`` evenly spaced thresholds from the max to the min. Memory: the normal pixels' values once
    (sorted), not a weight or an index per pixel.
    """
    m, g = _check_maps(maps, masks)
    pos, pos_w, n_components = _anomalous_pixels(m, g)
    neg = m[~g]
    neg.sort()  # in place: the only copy of the normal pixels' values
    n_normal = neg.size
    if n_components == 0 or n_normal == 0:
        raise ValueError("the PRO curve needs at least one anomalous and one normal pixel")
    pos_w = pos_w / n_components

    def fpr_at(t: np.ndarray, side: str) -> np.ndarray:  # share of normal pixels >= t ("left") or > t ("right")
        return (n_normal - np.searchsorted(neg, t, side=side)) / n_normal

    if num_thresholds is None:
        order = np.argsort(pos, kind="stable")[::-1]  # descending
        values, weights = pos[order], np.cumsum(pos_w[order])
        last = np.r_[np.flatnonzero(values[1:] != values[:-1]), values.size - 1]  # end of each run of ties
        distinct = values[last]
        pro_at = weights[last]  # PRO(>= v)
        pro_above = np.r_[0.0, pro_at[:-1]]  # PRO(> v)
        fpr = np.stack([fpr_at(distinct, "right"), fpr_at(distinct, "left")], axis=1).ravel()
        pro = np.stack([pro_above, pro_at], axis=1).ravel()
        fpr, pro = np.r_[fpr, 1.0], np.r_[pro, pro_at[-1]]
    else:
        if num_thresholds < 2:
            raise ValueError(f"num_thresholds must be >= 2 (or None for exact), got {num_thresholds}")
        thresholds = np.linspace(max(neg[-1], pos.max()), min(neg[0], pos.min()), num_thresholds)  # descending
        fpr = fpr_at(thresholds, "left")
        order = np.argsort(pos, kind="stable")
        pos_sorted = pos[order]
        # tail[k] = total weight of anomalous pixels from sorted index k on (score >= pos_sorted[k]).
        tail = np.r_[np.cumsum(pos_w[order][::-1])[::-1], 0.0]
        pro = tail[np.searchsorted(pos_sorted, thresholds, side="left")]
    return np.r_[0.0, fpr], np.r_[0.0, np.minimum(pro, 1.0)]


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) for x in [0, limit], x non-decreasing from 0, interpolating at the limit."""
    k = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:k], y[:k]
    if xs[-1] < limit and k < x.size:
        t = (limit - x[k - 1]) / (x[k] - x[k - 1])
        xs = np.r_[xs, limit]
        ys = np.r_[ys, y[k - 1] + t * (y[k] - y[k - 1])]
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))


def aupro(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int | None = None
) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD): 1.0 perfect, ~fpr_limit/2 random.

    (N, H, W) float maps, (N, H, W) bool masks; components use 8-connectivity per image, FPR counts
    the normal pixels of all images. nan when there is no anomalous or no normal pixel.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, g = _check_maps(maps, masks)
    if g.all() or not g.any():
        return float("nan")
    fpr, pro = pro_curve(m, g, num_thresholds)
    return _area_to(fpr, pro, fpr_limit) / fpr_limit


def compute_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """Image AUROC and F1-max, plus pixel AUROC and AUPRO when maps (N, H, W) and masks are given."""
    out = {"image_auroc": image_auroc(scores, labels), "f1_max": f1_max(scores, labels)}
    if (maps is None) != (masks is None):
        raise ValueError("pass both maps and masks for pixel metrics, or neither")
    if maps is not None and masks is not None:
        if len(maps) != len(np.asarray(scores)):
            raise ValueError(f"got {len(maps)} anomaly maps for {len(np.asarray(scores))} image scores")
        out["pixel_auroc"] = pixel_auroc(maps, masks)
        out["aupro"] = aupro(maps, masks, fpr_limit=fpr_limit)
    return out
