"""What every model kind shares to score images: precision, Gaussian smoothing of maps, and running a scorer
over a loader.

A scorer is a plain ``nn.Module`` mapping an image batch (B, C, H, W) in [-1, 1] to a (B, K) matrix of named
scores (in ``scorer.names`` order) and a (B, H, W) anomaly map, so that the same code is trained, tested and
exported to ONNX. Each kind defines its scores once (``scgan.models.scgan.scorer``,
``scgan.models.patchcore.model``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Lightning precision names -> the autocast dtype the scorer runs its generator in (None = plain fp32).
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_FP32 = ("32-true", "32")


def autocast_dtype(precision: str | None) -> torch.dtype | None:
    """The autocast dtype for a Lightning precision name ("bf16-mixed" -> bfloat16); None for fp32."""
    if precision is None or str(precision) in _FP32:
        return None
    if str(precision) not in _AUTOCAST:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(_FP32 + tuple(_AUTOCAST))}")
    return _AUTOCAST[str(precision)]


def default_sigma(image_size: int) -> float:
    """Smoothing sigma in pixels when nothing else decides it: S / 64 (1 px at 64, 4 px at 256)."""
    return image_size / 64


def scorer_sigma(setting: float | str | None, size: int, calibration=None) -> float:
    """The smoothing a scorer takes: the calibration's where it records one (its statistics hold only with the
    sigma they were fitted with), else ``score.sigma``; null or "auto" (before calibration chooses): S / 64 of the
    working size ``size``."""
    if calibration is not None and calibration.sigma is not None:
        return float(calibration.sigma)
    return default_sigma(size) if setting is None or setting == "auto" else float(setting)


class GaussianBlur(nn.Module):
    """Fixed separable Gaussian smoothing of (B, 1, H, W) maps with reflect padding (ONNX-friendly)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        radius = max(int(math.ceil(3 * sigma)), 1) if sigma > 0 else 0
        coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(coords**2) / (2 * sigma**2)) if sigma > 0 else torch.ones(1)
        self.radius = radius
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 1, -1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.radius == 0:
            return x
        r = min(self.radius, x.shape[-1] - 1, x.shape[-2] - 1)
        k = self.kernel if r == self.radius else self.kernel[..., self.radius - r : self.radius + r + 1]
        k = (k / k.sum()).to(x.dtype)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(-1, -2))


@dataclass
class ScoreResult:
    """Scores and maps of a whole data set, in the data set's order (whatever order its loader batched it in)."""

    scores: np.ndarray  # (N, K) in ``names`` order
    maps: list[np.ndarray]  # N float32 maps, each at its image's input size (S x S for an SCGAN)
    labels: np.ndarray  # (N,) int
    masks: list[np.ndarray]  # N bool ground-truth masks at the same sizes
    paths: list[str]
    defects: list[str]
    names: tuple[str, ...]

    def score(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise ValueError(f"unknown score {name!r}; valid scores: {', '.join(self.names)}")
        return self.scores[:, self.names.index(name)]


@torch.inference_mode()
def score_loader(scorer: nn.Module, loader, device: torch.device | str = "cpu", progress: bool = False) -> ScoreResult:
    """Run the scorer (its ``run``, so with its speed options) over a loader of dataset items (eval mode)."""
    was_training = scorer.training
    scorer.eval()
    rows: dict[int, tuple] = {}
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="scoring", leave=False)
    for batch in it:
        s, m = scorer.run(batch["image"].to(device))
        s, m = s.float().cpu().numpy(), m.float().cpu().numpy()
        index = batch["index"].tolist() if "index" in batch else range(len(rows), len(rows) + len(s))
        for j, i in enumerate(index):
            rows[int(i)] = (s[j], m[j], int(batch["label"][j]), batch["mask"][j, 0].numpy() > 0.5,
                            batch["path"][j], batch["defect"][j])
    scorer.train(was_training)
    if not rows:
        raise ValueError("nothing to score: the data set is empty")
    ordered = [rows[i] for i in sorted(rows)]
    return ScoreResult(np.stack([r[0] for r in ordered]), [r[1] for r in ordered],
                       np.array([r[2] for r in ordered], dtype=int), [r[3] for r in ordered],
                       [r[4] for r in ordered], [r[5] for r in ordered], tuple(scorer.names))
