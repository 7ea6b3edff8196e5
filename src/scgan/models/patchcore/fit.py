"""Fitting the feature-memory detector: the patch features of the normal training images, then a greedy coreset
of them as the memory bank. No gradient step, no epoch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from scgan.models.patchcore.backbone import EfficientNetLite
from scgan.models.patchcore.coreset import greedy_coreset, random_projection
from scgan.models.patchcore.model import FeatureLayout, embed


@torch.no_grad()  # not inference_mode: the patches are scaled in place afterwards
def collect_patches(backbone: EfficientNetLite, layout: FeatureLayout, batches: Iterable[torch.Tensor],
                    total: int, keep: int, generator: torch.Generator,
                    progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The patch features (N, D) of image batches (B, C, H, W), a seeded random subset of about ``keep`` of the
    ``total`` patches they hold (all of them when ``total`` <= ``keep``): memory stays bounded by ``keep``.

    ``progress(images)`` is called after each batch.
    """
    rate = min(1.0, keep / max(total, 1))
    kept: list[torch.Tensor] = []
    seen = 0
    for x in batches:
        f = torch.cat([embed(backbone, one, layout) for one in x.split(1)])  # one at a time: see PatchCoreScorer.run
        f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        if rate < 1.0:
            f = f[torch.rand(f.shape[0], generator=generator) < rate]
        kept.append(f.float())
        seen += x.shape[0]
        if progress is not None:
            progress(seen)
    if not kept:
        raise ValueError("fitting needs at least one normal training image")
    return torch.cat(kept)


def layer_scale(patches: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """Per-channel weights (D,) under which each layer's features weigh the same in a distance: every channel of
    layer l gets 1 / sqrt(the layer's total variance over ``patches`` (N, D)), ``channels`` giving each layer's
    count. Two random normal patches then differ by about sqrt(2) per layer, whatever its width or magnitude."""
    scale = torch.empty(patches.shape[1])
    start = 0
    for c in channels:
        part = patches[:, start:start + c]
        scale[start:start + c] = 1.0 / float(part.var(dim=0).sum().clamp_min(1e-12)).__pow__(0.5)
        start += c
    return scale


def choose_bank(patches: torch.Tensor, size: int, projection: int, generator: torch.Generator,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The memory bank: ``size`` rows of ``patches`` (N, D) by greedy coreset on a random projection of them
    (``projection`` dims; 0 = none), starting at a seeded random row. All rows when N <= size."""
    if patches.shape[0] <= size:
        return patches.clone()
    start = int(torch.randint(patches.shape[0], (1,), generator=generator))
    index = greedy_coreset(random_projection(patches, projection, generator), size, start=start, progress=progress)
    return patches[index].clone()
