"""The PatchCore detector as a model kind: a memory bank of normal patch features on a frozen backbone."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scgan.config import Config, PatchCoreConfig, one_of
from scgan.data.io import InputSpec
from scgan.models.kind import ModelKind
from scgan.models.patchcore.backbone import VARIANTS, block_plan, load_backbone, weights_digest
from scgan.models.patchcore.model import BASE_SCORES, SCORES, FeatureLayout, MemoryBank, PatchCoreScorer, top_count
from scgan.models.scoring import autocast_dtype, scorer_sigma


def layout(cfg: Config) -> FeatureLayout:
    """The feature layout ``cfg.patchcore`` describes."""
    return FeatureLayout(tuple(cfg.patchcore.layers), cfg.patchcore.neighbourhood, cfg.patchcore.pad)


def feature_dims(cfg: Config) -> int:
    """D: the channels of the patch features (the chosen blocks' outputs, concatenated)."""
    plan = block_plan(cfg.patchcore.backbone)
    return sum(plan[i].channels for i in cfg.patchcore.layers)


def _input_spec(cfg: Config) -> InputSpec:
    p = cfg.patchcore
    stride = block_plan(p.backbone)[max(p.layers)].stride
    channels = 3 if p.channels == "auto" else int(p.channels)  # auto: resolved when fitted, stored in the model
    # Mirror padding needs sides longer than the pad: a sliver of an image is brought to at least pad + stride.
    return InputSpec(p.resolution, keep_aspect=True, multiple=stride, channels=channels,
                     min_side=p.pad + stride if p.pad else 0)


def _build_parts(cfg: Config, state: dict[str, Any] | None = None) -> dict[str, nn.Module]:
    """The memory bank (empty when fresh); a loaded one must fit the config and the installed backbone weights."""
    if state is None:
        return {"memory": MemoryBank(torch.zeros(0, feature_dims(cfg)), weights_digest(cfg.patchcore.backbone))}
    if set(state) != {"memory"}:
        raise RuntimeError(f"the file holds the parts {sorted(state)}, a patchcore model has ['memory']")
    bank = state["memory"]["bank"]
    d = bank.shape[-1] if bank.ndim else 0
    whitening = (torch.zeros(d), torch.zeros(d, d)) if cfg.patchcore.metric == "mahalanobis" else None
    memory = MemoryBank(torch.zeros_like(bank), whitening=whitening)
    memory.backbone_digest = torch.zeros_like(state["memory"]["backbone_digest"])
    grid = cfg.patchcore.position_grid
    if grid:
        held = state["memory"].get("position_mean")
        if held is None or tuple(held.shape) != (1, 1, grid, grid):
            raise RuntimeError(f"its config computes map_z on a {grid} x {grid} grid, and it holds "
                               f"{'none' if held is None else 'one of shape ' + str(tuple(held.shape))}")
        memory.set_position(torch.zeros(grid, grid), torch.ones(grid, grid), 0.0)
    own = state["memory"].get("self_mean")
    if own is not None:  # the self map's statistics: held only where the fit fused it (patchcore.self_map)
        if cfg.patchcore.self_map == "none":
            raise RuntimeError("it holds the self map's statistics, and its config says patchcore.self_map: none")
        g = own.shape[-1]
        memory.set_self(torch.zeros(g, g), torch.ones(g, g), 0.0)
    elif cfg.patchcore.self_map == "always":
        raise RuntimeError("its config says patchcore.self_map: always, and it holds no self map's statistics")
    memory.load_state_dict(state["memory"], strict=True)
    if bank.ndim != 2 or bank.shape[1] != feature_dims(cfg) or bank.shape[0] == 0:
        raise RuntimeError(f"its memory bank has shape {tuple(bank.shape)}, not (M, {feature_dims(cfg)}) as the "
                           f"config's backbone and layers give")
    bad = ~(torch.isfinite(memory.scale) & (memory.scale > 0))
    if bad.any():  # a fitted scale is 1 / a layer's spread: positive; 0 would blank features, nan/inf every score
        raise ValueError(f"its memory bank's feature scale is {memory.scale[bad][0].item():g} at {int(bad.sum())} of "
                         f"{bad.numel()} features; a fitted scale is positive and finite")
    if grid and (not bool(torch.isfinite(memory.position_mean).all())
                 or not bool((torch.isfinite(memory.position_spread) & (memory.position_spread > 0)).all())):
        raise ValueError(f"its normal maps' grid (map_z) is not a finite {grid} x {grid} grid with positive spreads")
    if memory.has_self and not all(bool(t.all()) for t in (
            torch.isfinite(memory.self_mean), torch.isfinite(memory.self_norm), torch.isfinite(memory.self_spread),
            memory.self_spread > 0, memory.self_norm[1::2] > 0)):
        raise ValueError("its self map's statistics are not finite, or a spread or a normalising span is not positive")
    installed = weights_digest(cfg.patchcore.backbone)
    if memory.digest != installed:
        raise RuntimeError(f"it was fitted with other {cfg.patchcore.backbone} weights (sha256 "
                           f"{memory.digest[:12]}...) "
                           f"than the installed ones ({installed[:12]}...); fit it again")
    return {"memory": memory.eval()}


def _score_names(cfg: Config) -> tuple[str, ...]:
    return BASE_SCORES + (("map_top",) if cfg.patchcore.top_share > 0 else ()) + (
        ("map_z",) if cfg.patchcore.position_grid else ())


def _build_scorer(cfg: Config, parts: dict[str, nn.Module], calibration=None, precision: str | None = None,
                  channels_last: bool | None = None) -> PatchCoreScorer:
    sigma = scorer_sigma(cfg.score.sigma, cfg.patchcore.resolution, calibration)
    backbone = load_backbone(cfg.patchcore.backbone, max(cfg.patchcore.layers))
    cl = cfg.runtime.channels_last if channels_last is None else channels_last
    return PatchCoreScorer(backbone, parts["memory"], layout(cfg), sigma=float(sigma),
                           autocast_dtype=autocast_dtype(precision), channels_last=cl,
                           top=top_count(cfg.patchcore.top_share, cfg.patchcore.resolution),
                           position=cfg.patchcore.position_grid > 0,
                           position_map=cfg.patchcore.position_map).eval()


def _check_config(cfg: Config) -> None:
    p = cfg.patchcore
    one_of(p.backbone, VARIANTS, "patchcore.backbone")
    n = len(block_plan(p.backbone))
    if any(i >= n for i in p.layers) or list(p.layers) != sorted(set(p.layers)):
        raise ValueError(f"patchcore.layers must be increasing block indices of {p.backbone} (0-{n - 1}), "
                         f"got {p.layers!r}")
    stride = block_plan(p.backbone)[max(p.layers)].stride
    least = _input_spec(cfg).least_side
    if top_count(p.top_share, p.resolution) > least * least:
        raise ValueError(f"patchcore.top_share {p.top_share:g} asks for more pixels than the smallest map the model "
                         f"takes ({least} x {least} px); at resolution {p.resolution} it may be at most "
                         f"{least * least / p.resolution ** 2:.4g}")
    if p.position_grid and cfg.score.sigma == "auto":
        raise ValueError("patchcore.position_grid needs a fixed score.sigma (null or a number of pixels), not auto: "
                         "map_z's normal maps are smoothed before the calibration would choose it (or fit the model "
                         "again with patchcore.position_grid=0)")
    if p.self_map != "none" and cfg.score.sigma == "auto":
        raise ValueError("patchcore.self_map needs a fixed score.sigma (null or a number of pixels), not auto: the "
                         "self map's normal maps are smoothed before the calibration would choose it")
    if p.self_map != "none" and p.position_map:
        raise ValueError("patchcore.self_map and patchcore.position_map both make the anomaly map: set one of them")
    if p.pad % stride:
        raise ValueError(f"patchcore.pad must be a multiple of {stride} (the stride of block {max(p.layers)} of "
                         f"{p.backbone}), got {p.pad}")


PATCHCORE = ModelKind(
    name="patchcore",
    description="the PatchCore detector: distance of each patch's ImageNet features to the normal ones",
    sections={"patchcore": PatchCoreConfig},
    scores=dict(SCORES),
    score_preference=("map_max", "patch_max"),
    score_names=_score_names,
    input_spec=_input_spec,
    build_parts=_build_parts,
    build_scorer=_build_scorer,
    check_config=_check_config,
    recalibration_keys=("patchcore.top_share",),  # map_top is computed from the map: no new fit
    updatable=True,  # new normal patches join the memory bank
    crossfit=True,  # per-fold banks by the same streaming merge (scgan.training.crossfit)
    scoring_backend="onnx",  # its exported graph scores about 3x faster than torch on 2 CPU cores (performance.md)
)
