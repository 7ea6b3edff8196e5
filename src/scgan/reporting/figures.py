"""The report's pictures as PNG bytes: the ROC curve, the score histogram and the example grids."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from scgan.reporting.visualize import overlay
from scgan.utils.names import mpl_text
from scgan.utils.tables import pct

_NORMAL_COLOR, _ANOMALOUS_COLOR = "#1f77b4", "#d62728"


@dataclass
class ReportExample:
    """One test image for the example grids."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    heat: np.ndarray  # (h, w) anomaly map in [0, 1]; resized to the image if needed
    score: float
    label: int  # 0 normal, 1 anomalous
    mask: np.ndarray | None = None  # (h, w) bool ground truth, drawn as a contour
    decision: str | None = None  # the model's call at its threshold ("anomalous" / "normal"), if calibrated


def _png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes (Agg) and release it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    fig.clear()
    return buf.getvalue()


def roc_png(scores: np.ndarray, labels: np.ndarray, score_name: str) -> bytes | None:
    """ROC curve of the (N,) scores against the (N,) bool labels; None when the labels hold one class."""
    if labels.size == 0 or labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=_ANOMALOUS_COLOR, lw=2, label=mpl_text(f"{score_name} (AUROC {pct(auc, unit='%')})"))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title=mpl_text(f"Image-level ROC: {score_name}"))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def hist_png(scores: np.ndarray, labels: np.ndarray, score_name: str, threshold: float | None) -> bytes | None:
    """Overlaid histograms of normal and anomalous scores, the threshold as a vertical line; None without scores."""
    if scores.size == 0:
        return None
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    lo, hi = float(scores.min()), float(scores.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    for mask, color, name in ((~labels, _NORMAL_COLOR, "normal"), (labels, _ANOMALOUS_COLOR, "anomalous")):
        if mask.any():
            ax.hist(scores[mask], bins=bins, color=color, alpha=0.55, label=f"{name} (n={int(mask.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.4g}")
    ax.set(xlabel=mpl_text(f"anomaly score ({score_name})"), ylabel="images",
           title=mpl_text(f"Test scores: {score_name}"))
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def examples_png(examples: list[ReportExample], heat_ticks: list[tuple[float, str]] | None = None) -> bytes | None:
    """One row per example: image | heat-map overlay (mask contour, colour bar) | ground-truth mask, under a title
    with its name, score, truth and decision; None without examples. Constrained layout keeps titles apart."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if not examples:
        return None
    fig = Figure(figsize=(9.0, 3.3 * len(examples)), layout="constrained")
    for sub, ex in zip(np.atleast_1d(fig.subfigures(len(examples), 1)), examples):
        truth = "anomalous" if int(ex.label) else "normal"
        call = "" if ex.decision is None else (
            f"  |  decision: {ex.decision}" + (" (correct)" if ex.decision == truth else " (wrong)"))
        sub.suptitle(mpl_text(f"{ex.name}  |  score {float(ex.score):.4g}\nground truth: {truth}{call}"), fontsize=9)
        ax_img, ax_ovl, ax_mask = sub.subplots(1, 3)
        img = np.asarray(ex.image)
        h, w = img.shape[:2]
        ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="antialiased")
        ax_img.set_title(f"image ({w} x {h})", fontsize=8)
        ax_ovl.imshow(overlay(ex.image, ex.heat, ex.mask), interpolation="antialiased")
        ax_ovl.set_title("heat map" + (" + defect outline (white)" if ex.mask is not None else ""), fontsize=8)
        if ex.mask is not None:
            ax_mask.imshow(np.asarray(ex.mask, dtype=float), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax_mask.set_title("ground-truth mask", fontsize=8)
        else:
            ax_mask.text(0.5, 0.5, "no defect mask" if int(ex.label) else "normal image:\nno defect",
                         ha="center", va="center", fontsize=8, color="#666", transform=ax_mask.transAxes)
        for ax in (ax_img, ax_ovl, ax_mask):
            ax.set_axis_off()
        bar = sub.colorbar(ScalarMappable(Normalize(0.0, 1.0), "jet"), ax=ax_ovl, fraction=0.046, pad=0.02)
        ticks = heat_ticks or [(0.0, "0"), (1.0, "1")]
        bar.set_ticks([t for t, _ in ticks], labels=[mpl_text(label) for _, label in ticks])
        bar.set_label("map value", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return _png(fig, dpi=110)
