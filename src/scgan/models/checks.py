"""A whole config checked before anything is fitted, saved or loaded: its numbers (each section's ``validate``),
then its names against the registries that own them (the model kind, the kind's own settings, the score).

The schema (``scgan.config``) checks numbers only and knows no network.
"""
from __future__ import annotations

from scgan.config import Config
from scgan.models.registry import get_kind


def check_config(cfg: Config) -> Config:
    """Raise ValueError for any setting of ``cfg`` that cannot work (numbers and names); return ``cfg``."""
    kind = get_kind(cfg.kind)
    cfg.validate()
    kind.check_config(cfg)
    if cfg.score.threshold_source == "crossfit" and not kind.crossfit:
        raise ValueError(f"score.threshold_source = crossfit needs a kind whose fit scores its training images "
                         f"cross-fitted; a {cfg.kind} model's does not: use validation")
    names = kind.score_names(cfg)
    if cfg.score.default_score not in ("auto", *names):
        about = kind.describe(cfg)
        raise ValueError(f"default_score {cfg.score.default_score!r} is not a score of this model "
                         f"({cfg.kind}{', ' + about if about else ''}); its scores: auto, {', '.join(names)}"
                         + (f" ({cfg.score.default_score}: {kind.scores[cfg.score.default_score]})"
                            if cfg.score.default_score in kind.scores else ""))
    return cfg
