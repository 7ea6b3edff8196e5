"""The fusion as a model kind: the PatchCore detector and the SCGAN + head in one model file and one scoring graph.

Its config holds both kinds' sections (``patchcore``; ``model``, ``loss``, ``augment``, ``train``) and the shared
ones; :func:`part_config` gives each model its own config from it. Its parts are both models' parts and the
:class:`~scgan.models.fusion.scorer.FusionWeights` that join them.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from scgan.config import KIND_SECTIONS, Config
from scgan.data.io import InputSpec
from scgan.models.fusion.scorer import SCORES, FusionScorer, FusionWeights
from scgan.models.kind import ModelKind
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.scgan.kind import SCGAN

_PARTS = {"features": PATCHCORE, "restoration": SCGAN}


def part_config(cfg: Config, part: str) -> Config:
    """The config of one of the fusion's models (``features``: the PatchCore detector, ``restoration``: the SCGAN +
    head): its kind's sections and the shared ones, copied. Each is calibrated as its own preset is: the PatchCore
    detector on map_z where its grid is set (else ``auto``), the SCGAN on ``auto``; both on the validation images."""
    kind = _PARTS[part]
    sections = {name: copy.deepcopy(cfg.sections[name]) for name in KIND_SECTIONS[kind.name]}
    out = Config(preset=cfg.preset, kind=kind.name, seed=cfg.seed, data=copy.deepcopy(cfg.data),
                 score=copy.deepcopy(cfg.score), runtime=copy.deepcopy(cfg.runtime), sections=sections)
    out.score.threshold_source = "validation"
    out.score.default_score = "map_z" if part == "features" and cfg.patchcore.position_grid else "auto"
    return out


def _input_spec(cfg: Config) -> InputSpec:
    return PATCHCORE.input_spec(part_config(cfg, "features"))  # the SCGAN's S x S is taken inside the graph


def _split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    features = {k: v for k, v in state.items() if k == "memory"}
    return features, {k: v for k, v in state.items() if k not in ("memory", "fusion")}


def _build_parts(cfg: Config, state: dict[str, Any] | None = None) -> dict[str, nn.Module]:
    """Both models' parts and the weights that join them (fresh where ``state`` is None, else loaded, strict)."""
    features, restoration = part_config(cfg, "features"), part_config(cfg, "restoration")
    if state is None:
        return {**PATCHCORE.build_parts(features, None), **SCGAN.build_parts(restoration, None),
                "fusion": FusionWeights()}
    if "fusion" not in state or "memory" not in state:
        missing = [k for k in ("memory", "fusion") if k not in state]
        raise RuntimeError(f"a fusion model holds the memory bank, the SCGAN's weights and the fusion's; the file "
                           f"lacks {', '.join(missing)}")
    held_features, held_restoration = _split(state)
    weights = FusionWeights()
    held = state["fusion"].get("names_utf8")
    if held is not None:  # its length is the names' (a strict load checks every other shape)
        weights.names_utf8 = torch.zeros_like(held)
    weights.load_state_dict(state["fusion"], strict=True)
    weights.check()
    parts = {**PATCHCORE.build_parts(features, held_features), **SCGAN.build_parts(restoration, held_restoration),
             "fusion": weights.eval()}
    return parts


def _build_scorer(cfg: Config, parts: dict[str, nn.Module], calibration=None, precision: str | None = None,
                  channels_last: bool | None = None) -> FusionScorer:
    """Each model's scorer at the sigma it was fitted with (the fusion's calibration is the fusion's own); ValueError
    where a model's stored default score is no longer at its stored column."""
    held_features, held_restoration = _split(parts)
    weights = parts["fusion"]
    scorers = []
    for i, (part, held) in enumerate((("features", held_features), ("restoration", held_restoration))):
        scorer = _PARTS[part].build_scorer(part_config(cfg, part), held, None, precision, channels_last)
        if abs(scorer.sigma - float(weights.sigma[i])) > 1e-6:
            scorer.set_sigma(float(weights.sigma[i]))
        scorers.append(scorer)
    weights.check_columns([s.names for s in scorers])
    return FusionScorer(*scorers, weights, cfg.model.image_size).eval()


def _check_config(cfg: Config) -> None:
    if cfg.score.sigma is not None:
        raise ValueError(f"a fusion smooths each model's map at its own default (S / 64 of its working size): "
                         f"score.sigma must be null, got {cfg.score.sigma!r}")
    if str(cfg.patchcore.channels) == "1":
        raise ValueError("a fusion's SCGAN takes the images' colours: patchcore.channels must be auto or 3 (auto takes "
                         "grey where every training image is grey)")
    for part, kind in _PARTS.items():
        kind.check_config(part_config(cfg, part))


FUSION = ModelKind(
    name="fusion",
    description="the PatchCore detector and the SCGAN + head in one model: their normalised scores and maps averaged",
    sections=KIND_SECTIONS["fusion"],
    scores=dict(SCORES),
    score_preference=tuple(SCORES),
    score_names=lambda cfg: tuple(SCORES),
    input_spec=_input_spec,
    build_parts=_build_parts,
    build_scorer=_build_scorer,
    check_config=_check_config,
    describe=lambda cfg: f"features {cfg.patchcore.backbone} + SCGAN head {cfg.model.head}",
)
