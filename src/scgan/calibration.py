"""Named scores and their calibration on normal validation images (numpy only: usable without torch)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Order of the columns of the scorer's score matrix (torch and ONNX alike).
SCORE_NAMES: tuple[str, ...] = ("as", "l_con", "l_enc", "map_max")
SCORE_DESCRIPTIONS = {
    "as": "paper's AS = beta * L_con + (1 - beta) * L_enc (eq. 11)",
    "l_con": "mean |x - G(x)| over pixels and channels",
    "l_enc": "mean (z1 - z2)^2",
    "map_max": "maximum of the Gaussian-smoothed residual map",
}


@dataclass
class ScoreStats:
    """Statistics of one score on normal validation images."""

    min: float
    max: float
    mean: float
    std: float
    threshold: float  # the calibration quantile of the validation scores


@dataclass
class Calibration:
    """Normalisation and thresholds fitted on normal validation images only."""

    quantile: float
    n_images: int
    scores: dict[str, ScoreStats] = field(default_factory=dict)
    map_high: float = 1.0  # heat maps are shown as clip(map / map_high, 0, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(
            quantile=float(d["quantile"]),
            n_images=int(d["n_images"]),
            scores={k: ScoreStats(**{kk: float(vv) for kk, vv in v.items()}) for k, v in d["scores"].items()},
            map_high=float(d["map_high"]),
        )

    def normalize(self, name: str, values: np.ndarray) -> np.ndarray:
        """Min-max normalise with the validation range: normal images fall in about [0, 1], anomalies above."""
        s = self.scores[name]
        return (np.asarray(values, dtype=np.float64) - s.min) / max(s.max - s.min, 1e-12)

    def decide(self, name: str, values: np.ndarray) -> np.ndarray:
        """True where the score exceeds the validation threshold (anomalous)."""
        return np.asarray(values) > self.scores[name].threshold

    def heat(self, amap: np.ndarray) -> np.ndarray:
        """Anomaly map scaled for display to [0, 1] with the largest smoothed residual seen on normal images."""
        return np.clip(np.asarray(amap, dtype=np.float32) / max(self.map_high, 1e-12), 0.0, 1.0)


def fit_calibration(scores: np.ndarray, quantile: float) -> Calibration:
    """Calibration from validation scores (N, K) in SCORE_NAMES order (normal images only)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError("calibration needs at least one normal validation image")
    stats = {
        name: ScoreStats(
            min=float(col.min()), max=float(col.max()), mean=float(col.mean()), std=float(col.std()),
            threshold=float(np.quantile(col, quantile)),
        )
        for name, col in zip(SCORE_NAMES, scores.T)
    }
    return Calibration(quantile=quantile, n_images=scores.shape[0], scores=stats, map_high=stats["map_max"].max)


