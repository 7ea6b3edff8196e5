"""Anomaly scores, anomaly maps and their calibration on normal validation images (SPEC section 4).

The scoring graph (:class:`Scorer`) maps an image batch to a (B, K) matrix of named scores and a
(B, S, S) anomaly map. It is a plain ``nn.Module`` so that the same code is trained, tested and
exported to ONNX. Calibration (normalisation and the decision threshold) is fitted on normal
validation images only and stored with the model; the test set never influences it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scgan.calibration import SCORE_DESCRIPTIONS, SCORE_NAMES, Calibration, ScoreStats, fit_calibration
from scgan.models.networks import Generator, GeneratorOutput

__all__ = ["SCORE_DESCRIPTIONS", "SCORE_NAMES", "Calibration", "GaussianBlur", "ScoreResult", "ScoreStats", "Scorer",
           "autocast_dtype", "default_sigma", "fit_calibration", "score_loader", "select_sigma", "sigma_candidates"]

# Lightning precision names -> the autocast dtype the scorer runs its generator in (None = plain fp32).
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "bf16": torch.bfloat16,
             "16-mixed": torch.float16, "16-true": torch.float16, "16": torch.float16}
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


# score.sigma = auto tries these multiples of S / 64: none, half, default, double, quadruple.
SIGMA_FACTORS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
_SIGMA_PIXELS = 1 << 21  # pixel AUROC on at most this many pixels (a fixed subsample): cheap at any S


def sigma_candidates(image_size: int) -> list[float]:
    """The sigmas score.sigma = auto chooses from, default (S / 64) first: it wins ties."""
    d = default_sigma(image_size)
    return [d] + [f * d for f in SIGMA_FACTORS if f != 1.0]


@torch.no_grad()
def select_sigma(normal: torch.Tensor, synthetic: torch.Tensor, masks: torch.Tensor,
                 candidates: list[float]) -> tuple[float, dict[str, float]]:
    """The smoothing sigma whose maps best locate synthetic defects, and each candidate's pixel AUROC.

    ``normal`` and ``synthetic`` are unsmoothed residual maps (N, 1, S, S) of normal validation images
    and of the same images with synthetic defects pasted in; ``masks`` (N, 1, S, S) bool marks the
    pasted pixels. Every pixel of the normal maps and every unmasked pixel of the synthetic ones is a
    negative. Ties go to the earlier candidate. No real anomaly and no test image is involved.
    """
    from scgan.metrics import pixel_auroc

    if not masks.any() or masks.all():
        return float(candidates[0]), {}
    truth = torch.cat([torch.zeros_like(masks), masks]).flatten()
    keep = None
    if truth.numel() > _SIGMA_PIXELS:
        keep = torch.randperm(truth.numel(), generator=torch.Generator().manual_seed(0))[:_SIGMA_PIXELS]
        truth = truth[keep]
    aurocs: dict[str, float] = {}
    for sigma in candidates:
        blur = GaussianBlur(sigma).to(normal.device)
        maps = torch.cat([blur(normal.float()), blur(synthetic.float())]).flatten()
        maps = maps if keep is None else maps[keep.to(maps.device)]
        aurocs[f"{sigma:g}"] = pixel_auroc(maps.cpu().numpy()[None, None], truth.cpu().numpy()[None, None])
    best = max(range(len(candidates)), key=lambda i: (round(aurocs[f"{candidates[i]:g}"], 9), -i))
    return float(candidates[best]), aurocs


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


class Scorer(nn.Module):
    """Image batch (B, 3, S, S) in [-1, 1] -> (scores (B, K) in SCORE_NAMES order, anomaly map (B, S, S)).

    ``forward`` is the plain fp32 graph (what is exported to ONNX). :meth:`run` is ``forward`` with the
    speed options, both off by default: ``channels_last`` input, and the generator under autocast to
    ``autocast_dtype`` (bfloat16 roughly halves CPU scoring time where the CPU has native bf16, e.g.
    AVX-512 BF16 or AMX, and is many times slower where it has not); the score head stays in fp32.
    """

    def __init__(self, generator: Generator, beta: float = 0.8, sigma: float = 1.0,
                 autocast_dtype: torch.dtype | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.generator = generator
        self.beta = float(beta)
        self.blur = GaussianBlur(sigma)
        self.autocast_dtype = autocast_dtype
        self.channels_last = bool(channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x, self.generator(x))

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the speed options; with both off it is exactly ``forward``.

        ``raw`` returns the unsmoothed residual map instead of the anomaly map (to choose sigma).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.head(x, self.generator(x), raw)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            out = self.generator(x)
        # Residuals, blur and maxima in fp32: bf16 would round the scores to ~3 significant digits.
        with torch.autocast(x.device.type, enabled=False):
            return self.head(x, GeneratorOutput(out.x_hat.float(), out.z1.float(), out.z2.float()), raw)

    def head(self, x: torch.Tensor, out: GeneratorOutput, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and anomaly map (or, with ``raw``, the unsmoothed residual) of x from G's output on x."""
        residual = (x - out.x_hat).abs().mean(dim=1, keepdim=True)  # (B, 1, S, S)
        l_con = residual.flatten(1).mean(1)
        l_enc = (out.z1 - out.z2).pow(2).flatten(1).mean(1)
        amap = self.blur(residual)
        map_max = amap.flatten(1).amax(1)
        anomaly = self.beta * l_con + (1 - self.beta) * l_enc
        return torch.stack([anomaly, l_con, l_enc, map_max], dim=1), (residual if raw else amap)[:, 0]

    def set_sigma(self, sigma: float) -> None:
        """Smooth anomaly maps (and so map_max) with ``sigma`` pixels from now on."""
        self.blur = GaussianBlur(sigma).to(self.blur.kernel.device)


@dataclass
class ScoreResult:
    """Scores and maps of a whole loader, in loader order."""

    scores: np.ndarray  # (N, K) in SCORE_NAMES order
    maps: np.ndarray  # (N, S, S) float32
    labels: np.ndarray  # (N,) int
    masks: np.ndarray  # (N, S, S) bool
    paths: list[str]
    defects: list[str]

    def score(self, name: str) -> np.ndarray:
        if name not in SCORE_NAMES:
            raise ValueError(f"unknown score {name!r}; valid scores: {', '.join(SCORE_NAMES)}")
        return self.scores[:, SCORE_NAMES.index(name)]


@torch.inference_mode()
def score_loader(scorer: Scorer, loader, device: torch.device | str = "cpu", progress: bool = False) -> ScoreResult:
    """Run the scorer (:meth:`Scorer.run`, so with its speed options) over a loader of dataset items (eval mode)."""
    was_training = scorer.training
    scorer.eval()
    all_scores, maps, labels, masks, paths, defects = [], [], [], [], [], []
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc="scoring", leave=False)
    for batch in it:
        s, m = scorer.run(batch["image"].to(device))
        all_scores.append(s.float().cpu().numpy())
        maps.append(m.float().cpu().numpy())
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
        paths += list(batch["path"])
        defects += list(batch["defect"])
    scorer.train(was_training)
    if not all_scores:
        raise ValueError("nothing to score: the data set is empty")
    return ScoreResult(np.concatenate(all_scores), np.concatenate(maps), np.concatenate(labels).astype(int),
                       np.concatenate(masks), paths, defects)
