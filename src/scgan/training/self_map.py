"""The self map's normal statistics, measured while fitting (``patchcore.self_map``): how far each training image's
patches lie from their own image's median patch, by location, and how high the two maps the detector fuses run on
normal validation images.

The fused map is made by :meth:`scgan.models.patchcore.model.MemoryBank.fuse_self`; the statistics come from normal
images only: the training images' self maps, fed by the fit's own pass (no second pass through the backbone), and the
validation images' pixels.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from scgan.data.datasets import ImageStream
from scgan.models.patchcore.model import PatchCoreScorer, distance_maps, self_deviation
from scgan.models.scoring import GaussianBlur

SELF_GRID = 64  # cells of the grid over the image on which the normal self maps are summed (as map_z's default)
SPREAD_FLOOR = 0.1  # a cell's spread is at least this share of the median spread (a cell where all agree)
NORM_QUANTILE = 0.99  # each map is normalised by its normal pixels' median and this quantile


class SelfGrid:
    """``grid(index, patches)`` with a training image's patch features (N, D) in the bank's space (the fit's ``each``
    hook) sums its smoothed self map, area-averaged into the cells of a :data:`SELF_GRID` grid; :meth:`stats` gives
    their mean and spread. ``stride``: the features' grid step in pixels; ``sigma``: the map's smoothing."""

    def __init__(self, stream: ImageStream, stride: int, sigma: float, grid: int = SELF_GRID) -> None:
        self.stream, self.stride, self.grid = stream, stride, grid
        self.blur = GaussianBlur(sigma)
        self.first = torch.zeros(grid, grid, dtype=torch.float64)
        self.second = torch.zeros(grid, grid, dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def __call__(self, index: int, patches: torch.Tensor) -> None:
        size = self.stream.shape(index)
        h, w = size[0] // self.stride, size[1] // self.stride
        if h * w != patches.shape[0]:
            raise RuntimeError(f"the self map got {patches.shape[0]} patches of {self.stream.samples[index].path}, "
                               f"whose {size[0]} x {size[1]} px image makes {h} x {w}: did it change while fitting?")
        own = self_deviation(patches.float()[None]).reshape(1, 1, h, w)
        cells = F.adaptive_avg_pool2d(distance_maps(own, size, self.blur)[1], self.grid)[0, 0].double()
        self.first += cells
        self.second += cells ** 2
        self.count += 1

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normal self maps' mean and spread (the standard deviation over the images, floored at
        :data:`SPREAD_FLOOR` x its median), each (G, G)."""
        if self.count < 2:
            raise ValueError(f"patchcore.self_map needs the self maps of at least 2 training images, got {self.count}: "
                             "give more normal training images, or fit with patchcore.self_map=none")
        n = self.count
        mean = self.first / n
        spread = ((self.second - n * mean ** 2).clamp_min(0) / (n - 1)).sqrt()
        floor = max(float(SPREAD_FLOOR * spread.median()), 1e-12)
        return mean.float(), spread.clamp_min(floor).float()


@torch.no_grad()
def self_norm(scorer: PatchCoreScorer, loader: Iterable[dict]) -> torch.Tensor:
    """(4,): the median and the :data:`NORM_QUANTILE` quantile less the median of the normal validation images'
    pixels, of the smoothed distance map, then of the self map judged by location (:meth:`PatchCoreScorer.self_parts`
    over ``loader``'s batches)."""
    near, own = [], []
    for batch in loader:
        for x in batch["image"].split(1):
            a, b = scorer.self_parts(x)
            near.append(a.flatten().numpy())
            own.append(b.flatten().numpy())
    if not near:
        raise ValueError("patchcore.self_map needs at least one normal validation image to normalise its maps")
    out = []
    for pixels in (np.concatenate(near), np.concatenate(own)):
        median, high = np.quantile(pixels.astype(np.float64), [0.5, NORM_QUANTILE])
        out += [float(median), max(float(high - median), 1e-12 * max(1.0, abs(float(median))))]
    return torch.tensor(out)
