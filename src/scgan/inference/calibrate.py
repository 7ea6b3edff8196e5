"""Fitting a model's calibration on normal images: every score's statistics, the heat-map scale, and the
choice of the default score and of the smoothing sigma, all without a single real anomaly.

:func:`calibrate` is the public entry (``scgan calibrate`` re-fits a trained model on new normal images);
training calls the same :class:`CalibrationFitter`, batch by batch, at the end of every validation epoch (an
SCGAN), or once after fitting (a PatchCore detector).
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from scgan.calibration.stats import Calibration, add_shown_maps, fit_calibration, heat_scale
from scgan.config import Config, set_value
from scgan.config.overrides import resolve_key
from scgan.data.augment import build_augmentation
from scgan.evaluation.metrics import pixel_auroc
from scgan.models.checks import check_config
from scgan.models.registry import get_kind
from scgan.models.scoring import GaussianBlur, default_sigma, scorer_sigma
from scgan.utils.seed import seeded_generator

log = logging.getLogger("scgan")

# Normal scores (C, K) the thresholds rest on beside the validation images', given the sigma the calibration chose
# (map_max depends on it) and the K score names in column order; None where there are none for that sigma. See
# :func:`calibrate`.
NormalScores = Callable[[float, tuple[str, ...]], "np.ndarray | None"]

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



class CalibrationFitter:
    """Collects a scorer's outputs on normal validation batches (clean, and with synthetic defects pasted in
    for the ``auto`` choices), then fits the :class:`Calibration`.

    Scoring runs in fp32 whatever the training precision: test and predict score in fp32. The synthetic
    defects (confetti, ``selection_patches`` of them, blended in at each of ``selection_strengths``) are a
    kind training never sees; their randomness depends on (split_seed, batch index) only.
    """

    def __init__(self, scorer: nn.Module, cfg: Config) -> None:
        self.scorer, self.cfg = scorer, cfg
        s = cfg.score
        self.auto_sigma = s.sigma == "auto"
        self.auto_score = s.default_score == "auto"
        self.kind = get_kind(cfg.kind)
        self.defects = build_augmentation("confetti", s.selection_patches, s.selection_patch_area)
        # Defect strengths (shares of the confetti blended in) for the score choice; sigma = auto needs full strength.
        self.strengths = [float(a) for a in s.selection_strengths] if self.auto_score else []
        self._levels = list(dict.fromkeys(([1.0] if self.auto_sigma else []) + self.strengths))
        self._normal: list[torch.Tensor] = []
        self._synthetic: dict[float, list[torch.Tensor]] = {}
        # score.sigma = auto: unsmoothed residual maps, clean and with defects, and the defects' masks.
        self._res: list[torch.Tensor] = []
        self._res_synthetic: dict[float, list[torch.Tensor]] = {}
        self._masks: list[torch.Tensor] = []
        # Scores that are the smoothed peak of a map of their own (the scorer's ``other_raw_maps``, e.g. the SCGAN's
        # ssim_max): their unsmoothed maps by (defect strength, None = clean) and score, smoothed once sigma is chosen.
        self._others = self.auto_sigma and hasattr(scorer, "other_raw_maps")
        self._other_raw: dict[float | None, dict[str, list[torch.Tensor]]] = {}
        # The heat scale: each shown map's largest value and a sample of its pixels.
        self._map_max: list[float] = []
        self._map_pixels: list = []

    def _add_shown(self, maps: torch.Tensor | None) -> None:
        if maps is None:  # a scorer that gives no map (a test double): no heat scale
            return
        add_shown_maps(maps.float().cpu().numpy(), self._map_pixels, self._map_max)

    @torch.no_grad()
    def add(self, x: torch.Tensor, batch_idx: int) -> None:
        """Score one batch of normal images x (B, C, H, W)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            scores, residual = self.scorer.run(x, raw=self.auto_sigma)
            self._normal.append(scores.float().cpu())
            if self.auto_sigma:
                self._res.append(residual[:, None].float().cpu())
                if self.scorer.probability_map:  # the head's map does not depend on sigma; a residual's does (fit)
                    self._add_shown(self.scorer.run(x)[1])
            else:
                self._add_shown(residual)  # the map as shown
            if self.auto_score or self.auto_sigma:
                x_defect = self.defects(x, generator=seeded_generator(x.device, self.cfg.data.split_seed, batch_idx))
                for a in self._levels:
                    x_a = x_defect if a == 1.0 else x + a * (x_defect - x)  # the same pixels, changed less
                    synthetic, residual = self.scorer.run(x_a, raw=self.auto_sigma)
                    self._synthetic.setdefault(a, []).append(synthetic.float().cpu())
                    if self.auto_sigma:
                        self._res_synthetic.setdefault(a, []).append(residual[:, None].float().cpu())
                if self.auto_sigma:
                    self._masks.append((x_defect != x).any(dim=1, keepdim=True).cpu())
            if self._others:
                for a in [None, *self._levels]:
                    x_a = x if a is None else x_defect if a == 1.0 else x + a * (x_defect - x)
                    for name, m in self.scorer.other_raw_maps(x_a).items():
                        self._other_raw.setdefault(a, {}).setdefault(name, []).append(m.float().cpu())

    def fit(self, broadcast=None, crossfit: NormalScores | None = None) -> Calibration | None:
        """The calibration of everything added (None if nothing was). ``broadcast(obj)`` (DDP) gives every
        rank rank 0's sigma choice; ``crossfit``: see :func:`calibrate`."""
        if not self._normal:
            return None
        names = self.scorer.names
        scores = torch.cat(self._normal).numpy()
        synthetic = {a: torch.cat(v).numpy() for a, v in self._synthetic.items()}
        sigma, sigma_selection = self.scorer.sigma, {}
        if self.auto_sigma:
            normal_res = torch.cat(self._res)
            synth_res = {a: torch.cat(v) for a, v in self._res_synthetic.items()}
            sigma, sigma_selection = select_sigma(normal_res, synth_res[1.0], torch.cat(self._masks),
                                                  sigma_candidates(self.kind.input_spec(self.cfg).size))
            if broadcast is not None:  # rank 0's choice for all, even if kernels differ in the last bit
                sigma, sigma_selection = broadcast((sigma, sigma_selection))
            self.scorer.set_sigma(sigma)
            # the scores of the smoothed map depend on sigma: computed again with the chosen one
            blur = GaussianBlur(sigma)
            shown = blur(normal_res)
            for name, values in self.scorer.map_scores(shown).items():
                scores[:, names.index(name)] = values.numpy()
            if not self.scorer.probability_map:
                self._add_shown(shown[:, 0])
            for a, res in synth_res.items():
                for name, values in self.scorer.map_scores(blur(res)).items():
                    synthetic[a][:, names.index(name)] = values.numpy()
            for a, maps in self._other_raw.items():  # their maps' smoothed peaks at the chosen sigma
                for name, parts in maps.items():
                    values = blur(torch.cat(parts)).flatten(1).amax(1).numpy()
                    (scores if a is None else synthetic[a])[:, names.index(name)] = values
        # Heat maps are shown relative to the largest map value seen on normal images; a probability map (an
        # SCGAN's head) as it is.
        map_high = 1.0 if self.scorer.probability_map else float(scores[:, names.index("map_max")].max())
        levels = {a: synthetic[a] for a in self.strengths} if self.auto_score else None
        quantile = self.cfg.score.threshold_quantile
        heat = heat_scale(self._map_pixels, self._map_max, quantile) if self._map_max else None
        cal = fit_calibration(scores, names, quantile, levels, map_high=map_high, heat=heat,
                              preference=self.kind.score_preference, tail=self.cfg.score.tail,
                              crossfit=None if crossfit is None else crossfit(float(sigma), tuple(names)))
        cal.sigma, cal.sigma_selection = float(sigma), sigma_selection
        return cal


def calibrate(scorer: nn.Module, normal_loader, cfg: Config, device: torch.device | str = "cpu",
              crossfit: NormalScores | None = None) -> Calibration:
    """Fit ``scorer``'s calibration on a loader of normal images (dataset items with an "image" key).

    ``cfg`` supplies the quantile, the tail model, the score and sigma choices and the split seed. The scorer is put
    in eval mode; a sigma chosen here (score.sigma = auto) is set on it. ``crossfit(sigma, names)``: the cross-fitted
    scores (C, K) of normal training images at the chosen sigma, columns in ``names`` order (a fit's, or those a model
    file keeps: :func:`kept_crossfit`); the thresholds then rest on them and the validation images' together.
    """
    scorer.eval()
    scorer.set_sigma(scorer_sigma(cfg.score.sigma, get_kind(cfg.kind).input_spec(cfg).size))
    fitter = CalibrationFitter(scorer, cfg)
    for i, batch in enumerate(normal_loader):
        fitter.add(batch["image"].to(device), i)
    cal = fitter.fit(crossfit=crossfit)
    if cal is None:
        raise ValueError("calibration needs at least one normal image; the folder or split holds none")
    return cal


def scoring_changes(before: Config, after: Config) -> list[str]:
    """The kind's scoring settings (its ``recalibration_keys``) that differ between two configs of one model: scores
    computed under ``before`` are not those ``after`` computes."""
    def value(cfg: Config, key: str):
        section, name = key.split(".", 1)
        return getattr(getattr(cfg, section), name)

    return [k for k in get_kind(after.kind).recalibration_keys if value(before, k) != value(after, k)]


def kept_crossfit(calibration: Calibration | None, changed: list[str] | tuple[str, ...] = ()) -> NormalScores | None:
    """The cross-fitted normal scores a model file's calibration keeps, for :func:`calibrate` to rest the thresholds
    on again without scoring them again (None where it keeps none). They were scored at that calibration's sigma and
    scoring settings: at another sigma (score.sigma changed, or auto choosing anew), or with the scoring settings
    ``changed`` (:func:`scoring_changes`), they are dropped, with a warning."""
    kept = (calibration.normal_scores.get("crossfit") if calibration is not None else None) or {}
    if not kept:
        return None
    if changed:
        log.warning("the %d cross-fitted normal scores the model keeps were computed before %s changed: the thresholds "
                    "rest on the validation images alone (fit the model again to cross-fit anew)",
                    calibration.n_crossfit, ", ".join(changed))
        return None

    def scores(sigma: float, names: tuple[str, ...]) -> np.ndarray | None:
        if calibration.sigma is not None and not np.isclose(sigma, calibration.sigma):
            log.warning("the %d cross-fitted normal scores the model keeps were computed at sigma %g, not %g: the "
                        "thresholds rest on the validation images alone (fit the model again to cross-fit anew)",
                        calibration.n_crossfit, calibration.sigma, sigma)
            return None
        missing = [n for n in names if n not in kept]
        if missing:
            raise ValueError(f"the model keeps no cross-fitted {', '.join(missing)} scores; fit it again")
        return np.stack([np.asarray(kept[n], dtype=np.float64) for n in names], axis=1)

    return scores


# Shared settings a model's calibration depends on; with its kind's recalibration_keys, only these may change when
# it is re-fitted without training.
RECALIBRATION_KEYS = ("score.threshold_quantile", "score.default_score", "score.sigma", "score.selection_patches",
                      "score.selection_patch_area", "score.selection_strengths", "score.tail")


def recalibration_config(config: Config, overrides: dict | None = None) -> Config:
    """A copy of a trained model's config with ``overrides`` applied (RECALIBRATION_KEYS and its kind's
    ``recalibration_keys`` only, written ``section.key`` or ``key``), validated; ValueError for a setting that
    needs training."""
    cfg = copy.deepcopy(config)
    allowed = (*RECALIBRATION_KEYS, *get_kind(cfg.kind).recalibration_keys)
    names = ", ".join(k.split(".", 1)[1] for k in allowed)
    for key, value in (overrides or {}).items():
        try:
            full = ".".join(resolve_key(cfg, key))
        except ValueError:
            full = None
        if full not in allowed:
            raise ValueError(f"{key!r} cannot change without fitting a {cfg.kind} model again; calibrate takes "
                             f"{names}")
        set_value(cfg, full, value)
    return check_config(cfg)
