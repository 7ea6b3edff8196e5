"""The SCGAN scores and anomaly maps (SPEC section 4): the score registry and the scorer.

The scoring graph (:class:`Scorer`) maps an image batch to a (B, K) matrix of named scores (in
``scorer.names`` order) and a (B, S, S) anomaly map. Each score is defined once, in :data:`SCORES`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from scgan.models.scgan.maps import mean_filter, msgms_map, ssim_anomaly_map
from scgan.models.scgan.networks import Generator, GeneratorOutput
from scgan.models.scoring import GaussianBlur, autocast_dtype, scorer_sigma


def seg_pool_size(image_size: int) -> int:
    """DRAEM's 21 x 21 mean filter of the head's map at 256 px, scaled to S and kept odd (5 at 64, 11 at 128)."""
    return max(1, 2 * round((21 * image_size / 256 - 1) / 2) + 1)


@dataclass
class ScoreInputs:
    """What every score is computed from, for a batch x (B, 3, S, S)."""

    x: torch.Tensor
    out: GeneratorOutput
    residual: torch.Tensor  # (B, 1, S, S) |x - G(x)| averaged over channels
    residual_map: torch.Tensor  # (B, 1, S, S) the residual smoothed with the scorer's Gaussian
    beta: float
    blur: nn.Module  # the scorer's Gaussian
    seg: torch.Tensor | None = None  # (B, 1, S, S) the head's anomaly probability (models with a head)
    seg_pool: int = 1


@dataclass(frozen=True)
class ScoreDef:
    """One named score: what it is, and how it is computed from :class:`ScoreInputs` ((B,) tensor)."""

    description: str
    fn: Callable[[ScoreInputs], torch.Tensor]
    needs_head: bool = False


def _peak(m: torch.Tensor) -> torch.Tensor:
    return m.flatten(1).amax(1)


# The scores that are the smoothed peak of a map of their own (not the residual), by name: its map of x and G(x).
OTHER_MAPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ssim_max": ssim_anomaly_map, "msgms_max": msgms_map}


def _l_con(s: ScoreInputs) -> torch.Tensor:
    return s.residual.flatten(1).mean(1)


def _l_enc(s: ScoreInputs) -> torch.Tensor:
    return (s.out.z1 - s.out.z2).pow(2).flatten(1).mean(1)


def anomaly_score(l_con, l_enc, beta: float):
    """The paper's AS = beta * L_con + (1 - beta) * L_enc (eq. 11), of tensors or arrays alike."""
    return beta * l_con + (1 - beta) * l_enc


# Every score scgan defines, in the column order of the scorer's output (a model computes those it can).
SCORES: dict[str, ScoreDef] = {
    "as": ScoreDef("paper's AS = beta * L_con + (1 - beta) * L_enc (eq. 11)",
                   lambda s: anomaly_score(_l_con(s), _l_enc(s), s.beta)),
    "l_con": ScoreDef("mean |x - G(x)| over pixels and channels", _l_con),
    "l_enc": ScoreDef("mean (z1 - z2)^2", _l_enc),
    "map_max": ScoreDef("maximum of the Gaussian-smoothed residual map", lambda s: _peak(s.residual_map)),
    # RIAD's recipe for a restoration model: structure-aware maps instead of the plain residual.
    "ssim_max": ScoreDef("maximum of the Gaussian-smoothed 1 - SSIM map of x and G(x)",
                         lambda s: _peak(s.blur(OTHER_MAPS["ssim_max"](s.x, s.out.x_hat)))),
    "msgms_max": ScoreDef("maximum of the Gaussian-smoothed multi-scale gradient-magnitude dissimilarity map",
                          lambda s: _peak(s.blur(OTHER_MAPS["msgms_max"](s.x, s.out.x_hat)))),
    # DRAEM: the head's map mean-filtered (21 px at 256), then its maximum.
    "seg_max": ScoreDef("maximum of the mean-filtered map of the learned anomaly head",
                        lambda s: _peak(mean_filter(s.seg, s.seg_pool)), needs_head=True),
}
SCORE_NAMES: tuple[str, ...] = tuple(SCORES)


def score_names(head: bool) -> tuple[str, ...]:
    """The scores a model computes, in column order: all of them with a head, those without one otherwise."""
    return tuple(n for n, d in SCORES.items() if head or not d.needs_head)


class Scorer(nn.Module):
    """Image batch (B, 3, S, S) in [-1, 1] -> (scores (B, K) in ``names`` order, anomaly map (B, S, S)).

    ``forward`` is the plain fp32 graph (what is exported to ONNX). :meth:`run` is ``forward`` with the
    speed options, both off by default: ``channels_last`` input, and the generator under autocast to
    ``autocast_dtype`` (bfloat16 roughly halves CPU scoring time where the CPU has native bf16, e.g.
    AVX-512 BF16 or AMX, and is many times slower where it has not); the scores stay in fp32.
    """

    def __init__(self, generator: Generator, beta: float = 0.8, sigma: float = 1.0,
                 autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                 seg_head: nn.Module | None = None, seg_pool: int = 1) -> None:
        super().__init__()
        self.generator = generator
        self.seg_head = seg_head
        self.beta = float(beta)
        self.blur = GaussianBlur(sigma)
        self.seg_pool = int(seg_pool)
        self.autocast_dtype = autocast_dtype
        self.channels_last = bool(channels_last)
        self.names: tuple[str, ...] = score_names(seg_head is not None)

    @property
    def probability_map(self) -> bool:
        """True when the anomaly map is the head's probability (shown as it is), not a residual."""
        return self.seg_head is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_outputs(x, self.generator(x))

    def run(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the speed options; with both off it is exactly ``forward``.

        ``raw`` returns the unsmoothed residual map instead of the anomaly map (to choose sigma).
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.score_outputs(x, self.generator(x), raw)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            out = self.generator(x)
            seg = self.segment(x, out.x_hat)
        # Residuals, blur and maxima in fp32: bf16 would round the scores to ~3 significant digits.
        with torch.autocast(x.device.type, enabled=False):
            out = GeneratorOutput(out.x_hat.float(), out.z1.float(), out.z2.float())
            return self.score_outputs(x, out, raw, seg=None if seg is None else seg.float())

    def segment(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor | None:
        """The head's anomaly probability (B, 1, S, S) of x given its restoration (None without a head)."""
        if self.seg_head is None:
            return None
        return torch.sigmoid(self.seg_head(x, x_hat))

    def inputs(self, x: torch.Tensor, out: GeneratorOutput, seg: torch.Tensor | None = None) -> ScoreInputs:
        """The maps every score is computed from (``seg``: the head's map, computed here if not given)."""
        residual = (x - out.x_hat).abs().mean(dim=1, keepdim=True)  # (B, 1, S, S)
        if seg is None:
            seg = self.segment(x, out.x_hat)
        return ScoreInputs(x=x, out=out, residual=residual, residual_map=self.blur(residual), beta=self.beta,
                           blur=self.blur, seg=seg, seg_pool=self.seg_pool)

    def score_outputs(self, x: torch.Tensor, out: GeneratorOutput, raw: bool = False,
             seg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and anomaly map (or, with ``raw``, the unsmoothed residual) of x from G's output on x.

        The anomaly map is the head's probability map where the model has a head, else the smoothed residual.
        """
        s = self.inputs(x, out, seg)
        scores = torch.stack([SCORES[name].fn(s) for name in self.names], dim=1)
        amap = s.residual if raw else (s.seg if s.seg is not None else s.residual_map)
        return scores, amap[:, 0]

    @property
    def sigma(self) -> float:
        """The smoothing of the anomaly map, in pixels."""
        return self.blur.sigma

    def set_sigma(self, sigma: float) -> None:
        """Smooth anomaly maps (and so map_max) with ``sigma`` pixels from now on."""
        self.blur = GaussianBlur(sigma).to(self.blur.kernel.device)

    def map_scores(self, smooth: torch.Tensor) -> dict[str, torch.Tensor]:
        """map_max of a smoothed residual map (B, 1, H, W)."""
        return {"map_max": _peak(smooth)}

    def other_raw_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unsmoothed maps (B, 1, S, S) of this model's scores that are the smoothed peak of a map of their own
        (OTHER_MAPS), by score name: calibration smooths them with the sigma it chooses."""
        wanted = [n for n in self.names if n in OTHER_MAPS]
        if not wanted:
            return {}
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            x_hat = self.generator(x).x_hat
        return {n: OTHER_MAPS[n](x, x_hat.float()) for n in wanted}


def build_scorer(cfg, generator: Generator, precision: str | None = None, channels_last: bool | None = None,
                 calibration=None, seg_head: nn.Module | None = None) -> Scorer:
    """The scorer of config ``cfg``; ``precision`` ("bf16-mixed", ...) runs its generator under autocast (None: fp32).

    Scoring precision is chosen where the scoring runs, not stored with the model: a model trained in
    bf16 on a GPU must not make every later CPU test run in bf16 (slow without native bf16 support).
    ``channels_last`` (None: cfg.runtime.channels_last) feeds the generator channels-last input.
    A ``calibration`` that records its sigma (score.sigma = auto) sets the smoothing.
    """
    sigma = scorer_sigma(cfg.score.sigma, cfg.model.image_size, calibration)
    cl = cfg.runtime.channels_last if channels_last is None else channels_last
    return Scorer(generator, beta=cfg.model.beta, sigma=sigma, autocast_dtype=autocast_dtype(precision),
                  channels_last=cl, seg_head=seg_head, seg_pool=seg_pool_size(cfg.model.image_size))

