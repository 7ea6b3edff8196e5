"""What a test set's scores and maps say: every metric of every named score, and the decisions at the threshold."""
from __future__ import annotations

from typing import Any

import numpy as np

from scgan.calibration.stats import Calibration, exceeds
from scgan.data.io import resize_map
from scgan.evaluation.metrics import compute_metrics, pixel_auroc_by_defect
from scgan.models.kind import ModelKind
from scgan.models.registry import score_description
from scgan.models.scoring import ScoreResult


def decision_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and false-positive rate at the validation threshold (a score that is not finite
    counts as anomalous, as every decision does)."""
    pred = exceeds(scores, threshold)
    pos, neg = labels == 1, labels == 0
    tp, fp = int((pred & pos).sum()), int((pred & neg).sum())
    fn, tn = int((~pred & pos).sum()), int((~pred & neg).sum())
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / max(len(labels), 1),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "false_positive_rate": fp / (fp + tn) if fp + tn else float("nan"),
    }


def decisions_by_defect(scores: np.ndarray, labels: np.ndarray, defects: list[str], threshold: float,
                        threshold_normalized: float | None = None) -> dict[str, Any]:
    """What the threshold does to a test set, as an inspector counts it: the share of defective images it catches
    (overall and per defect type) and the share of normal images it flags (false alarms)."""
    flagged = exceeds(scores, threshold)
    labels = np.asarray(labels).astype(bool)

    def rate(k: int, n: int) -> float:
        return k / n if n else float("nan")

    caught, defective = int((flagged & labels).sum()), int(labels.sum())
    alarms, normal = int((flagged & ~labels).sum()), int((~labels).sum())
    by_defect: dict[str, dict[str, Any]] = {}
    for name in sorted({d for d, y in zip(defects, labels) if y}):
        rows = np.array([d == name for d in defects]) & labels
        n, k = int(rows.sum()), int((flagged & rows).sum())
        by_defect[name] = {"images": n, "caught": k, "catch_rate": rate(k, n)}
    return {"threshold": float(threshold), "threshold_normalized": threshold_normalized,
            "catch_rate": rate(caught, defective), "caught": caught, "defective": defective,
            "false_alarm_rate": rate(alarms, normal), "false_alarms": alarms, "normal": normal,
            "by_defect": by_defect}


def maps_at(maps: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Anomaly maps (each at its own size) bilinearly resized to ``size`` = (H, W): float32 (N, H, W)."""
    out = np.empty((len(maps), *size), dtype=np.float32)
    for i, m in enumerate(maps):
        out[i] = resize_map(m, size)
    return out


def metrics_for(result: ScoreResult, calibration: Calibration | None, default_score: str,
                masks: np.ndarray | None, kind: ModelKind | None = None) -> dict[str, Any]:
    """Top-level metrics of the default score plus one entry per named score (described as ``kind`` defines it,
    where given: two kinds may define a score of the same name, e.g. map_max).

    ``masks`` (N, H, W) bool: the ground truth at its stored resolution; the anomaly maps are up-sampled
    to it for pixel AUROC and AUPRO (None: image-level metrics only).
    """
    maps = maps_at(result.maps, masks.shape[1:]) if masks is not None else None
    pixel_part = compute_metrics(result.score(default_score), result.labels, maps, masks)
    per_score: dict[str, Any] = {}
    for name in result.names:
        s = result.score(name)
        m = compute_metrics(s, result.labels)
        if calibration is not None and name in calibration.scores:  # a model older than a score has none for it
            m["at_threshold"] = decision_metrics(s, result.labels, calibration.scores[name].threshold)
        m["description"] = kind.scores[name] if kind is not None and name in kind.scores else score_description(name)
        per_score[name] = m
    top = {
        "image_auroc": per_score[default_score]["image_auroc"],
        "pixel_auroc": pixel_part.get("pixel_auroc", float("nan")),
        "aupro": pixel_part.get("aupro", float("nan")),
        "f1_max": per_score[default_score]["f1_max"],
        "pixel_metrics_resolution": list(masks.shape[1:]) if masks is not None else None,
        # Which defects set the pixel AUROC: each type's (with every normal image) and its share of marked pixels.
        "pixel_auroc_by_defect": (pixel_auroc_by_defect(maps, masks, result.labels, result.defects)
                                  if masks is not None else {}),
        "default_score": default_score,
        "scores": per_score,
    }
    if calibration is not None:
        threshold = calibration.scores[default_score].threshold
        top["threshold"] = threshold
        top["threshold_normalized"] = calibration.threshold_normalized(default_score)
        top["at_threshold"] = decisions_by_defect(result.score(default_score), result.labels, result.defects,
                                                  threshold, top["threshold_normalized"])
        expected = calibration.false_alarms(default_score)
        top["at_threshold"].update(quantile=calibration.quantile, calibration_images=calibration.n_images,
                                   crossfit_images=calibration.n_crossfit,
                                   expected_false_alarm_rate=expected.expected,
                                   expected_false_alarm_interval=[expected.low, expected.high])
    return top
