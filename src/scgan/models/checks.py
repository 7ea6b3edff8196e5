"""Checks of a model before it is fitted, saved or loaded: a config's names against the registries that own
them (model kinds, data sets, scores), and every stored number finite.

The schema (``scgan.config``) checks numbers only and knows no network; this is where a whole config is
checked before anything is fitted or loaded.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from scgan.calibration.stats import Calibration
from scgan.config import Config
from scgan.data.datasets import DATASETS
from scgan.models.kind import one_of
from scgan.models.registry import get_kind


def check_config(cfg: Config) -> Config:
    """Raise ValueError for any setting of ``cfg`` that cannot work (numbers and names); return ``cfg``."""
    cfg.validate()
    kind = get_kind(cfg.model.kind)
    one_of(cfg.data.dataset, DATASETS, "dataset")
    kind.check_config(cfg)
    names = kind.score_names(cfg)
    if cfg.score.default_score not in ("auto", *names):
        raise ValueError(f"default_score {cfg.score.default_score!r} is not a score of this model "
                         f"({cfg.model.kind}{', head ' + cfg.model.head if cfg.model.kind == 'scgan' else ''}); "
                         f"its scores: auto, {', '.join(names)}")
    return cfg


class NonFiniteModelError(RuntimeError):
    """The weights or the calibration hold NaN or infinite values; nothing was saved."""


def nonfinite_cause(calibration: Calibration | None, parts: dict[str, nn.Module]) -> str | None:
    """What is not finite ("generator weight encoder1.0.weight is nan", "calibration l_con.max is inf"), or None.

    ``parts``: a model's stored parts by name (a kind's ``build_parts``). No model with such values is ever saved
    or loaded: it would score nan and compare nothing with its threshold.
    """
    for net_name, net in parts.items():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = t[~torch.isfinite(t)].flatten()[0].item()
                return f"{net_name} weight {name} is {bad}"
    if calibration is None:
        return None
    values = {"map_high": calibration.map_high}
    values.update({k: v for k in ("heat_low", "heat_threshold") if (v := getattr(calibration, k)) is not None})
    for score, stats in calibration.scores.items():
        values.update({f"{score}.{k}": v for k, v in vars(stats).items()})
    for key, value in values.items():
        if not math.isfinite(value):
            return f"calibration {key} is {value}"
    return None
