"""Cross-fitted normal scores of a PatchCore detector (``score.threshold_source = crossfit``): every normal training
image scored by a memory bank that never saw it, so that the threshold rests on all of them, not on the validation
images alone.

The training images are split into k seeded folds, and the fit's own pass through the backbone feeds them
(:class:`FoldFeed`, called by :func:`scgan.training.patchcore.merge_reduce` with each image's patches once they are in
the fitted bank's space): each image's patches join their own fold's buffer, merged into that fold's bank by the
fit's merge (:func:`scgan.training.patchcore.merge_bank`), and are kept, in float16, in an unnamed temporary file
beside the model. The buffers together hold at most ``patchcore.max_patches`` rows (each fold ``max_patches / k``, at
least ``bank_size``). The bank that scores fold j is then the same merge of the other folds' banks together
(:func:`merge_folds`). Each image is scored with its fold's bank from its kept patches, through the model's own map
and scores (the calibration's sigma): no second pass through the backbone. Its scores are those a new image would get
from a bank of (k - 1) / k of the training images (to float16's precision in the features): a little higher than from
the full bank, which errs towards fewer false alarms. Where the model computes ``map_z`` (``patchcore.position_grid``),
the same cross-fitted maps give its normal maps by location (:func:`fold_position`), and each training image's map_z
is judged against the other folds' maps only.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from scgan.config import Config
from scgan.data.datasets import ImageStream
from scgan.models.patchcore.backbone import block_plan
from scgan.models.patchcore.coreset import MergeBuffer, nearest_distance
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.patchcore.model import MemoryBank, distance_maps
from scgan.models.scoring import GaussianBlur

# What cross-fits the training images, and how to fit without it: for the errors that stop it.
_WHAT = "the cross-fit (score.threshold_source = crossfit, patchcore.position_grid)"
_WITHOUT = "score.threshold_source=validation with patchcore.position_grid=0"

# The fit's merge of new rows (N, D) into a bank (M, D) (its merge_bank, bounded by bank_size).
Merge = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fold_assignment(count: int, folds: int, seed: int) -> list[int]:
    """Each of ``count`` images' fold (0 .. k - 1, k = min(``folds``, count)), balanced and seeded by ``seed`` alone
    (the fit's own random draws stay as they are)."""
    k = min(folds, count)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    out = [0] * count
    for position, index in enumerate(order):
        out[index] = position % k
    return out


def merge_folds(own: list[torch.Tensor], merge_into: Merge) -> list[torch.Tensor]:
    """Each fold's memory bank from every fold's own bank (``own[i]``: the merge of fold i's images' patches): fold
    j's is the merge of the other folds' own banks together (a coreset of coresets, as the fit's bank is one of its
    buffers'), so that each patch passed one merge before this, not k - 1. A fold whose others hold no row gets an
    empty bank (:func:`crossfit_scores` refuses it)."""
    out = []
    for j in range(len(own)):
        others = [own[i] for i in range(len(own)) if i != j and own[i].shape[0]]
        out.append(merge_into(own[j][:0], torch.cat(others)) if others else own[j][:0])
    return out


class FoldFeed:
    """The cross-fit's share of the fit's pass: ``feed(index, patches)`` with image ``index``'s patch features (N, D)
    in the fitted bank's space (the fit calls it for every readable image, once) merges them into the image's fold's
    bank and keeps them, float16 (float32 where beyond its range), in an unnamed temporary file in ``directory``
    (gone when closed, or if the process dies), for :func:`crossfit_scores`. ``merge_into``: the fit's merge, with a
    generator of its own, so that the fit's bank is the same with or without the cross-fit."""

    def __init__(self, cfg: Config, count: int, merge_into: Merge, directory: str | os.PathLike[str]) -> None:
        if count < 2:
            raise ValueError(f"{_WHAT} needs at least 2 normal training images, found {count}: give more, or use "
                             f"{_WITHOUT}")
        self.folds = fold_assignment(count, cfg.score.crossfit_folds, cfg.seed)
        self.k = max(self.folds) + 1
        self._cap = max(cfg.patchcore.bank_size, cfg.patchcore.max_patches // self.k)
        self._merge = merge_into
        self._own: list[MergeBuffer] | None = None
        self._kept: dict[int, tuple[int, int, int, np.dtype]] = {}  # image -> (byte offset, rows, dims, dtype)
        self._directory = directory
        self._file = tempfile.TemporaryFile(dir=directory)
        self._merged_s = 0.0  # the final merges' (merge_folds)

    def __enter__(self) -> FoldFeed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def merge_s(self) -> float:
        """Seconds spent merging so far, in the fit's pass and after it."""
        return sum(b.merge_s for b in self._own or ()) + self._merged_s

    def __call__(self, index: int, patches: torch.Tensor) -> None:
        if self._own is None:
            empty = patches.new_zeros((0, patches.shape[1]))
            self._own = [MergeBuffer(empty, self._cap, self._merge) for _ in range(self.k)]
        self._own[self.folds[index]].add(patches)
        data = patches.detach().to(torch.float16)
        if not bool(torch.isfinite(data).all()):  # beyond float16's range: kept as they are
            data = patches.detach().float()
        data = data.contiguous().numpy()
        self._kept[index] = (self._file.tell(), data.shape[0], data.shape[1], data.dtype)
        try:
            self._file.write(data.tobytes())
        except OSError as e:
            raise self._disk_error(e) from e

    def _disk_error(self, e: OSError) -> OSError:
        return OSError(f"the cross-fit could not keep the training images' patch features in {self._directory} "
                       f"({e.strerror or e}): free disk space there, or use {_WITHOUT}")

    @property
    def kept_bytes(self) -> int:
        """The size of the kept patches' file."""
        return sum(rows * dims * dtype.itemsize for _, rows, dims, dtype in self._kept.values())

    def rows(self, index: int) -> int:
        """How many patches of image ``index`` are kept (0: the fit found it unreadable)."""
        return self._kept[index][1] if index in self._kept else 0

    def patches(self, index: int) -> torch.Tensor | None:
        """Image ``index``'s patch features (N, D) as fed, float32 (None: the fit found it unreadable)."""
        if index not in self._kept:
            return None
        offset, rows, dims, dtype = self._kept[index]
        self._file.seek(offset)
        data = np.frombuffer(self._file.read(rows * dims * dtype.itemsize), dtype=dtype).reshape(rows, dims)
        self._file.seek(0, 2)
        return torch.from_numpy(data.astype(np.float32))

    def banks(self) -> list[torch.Tensor]:
        """Each fold's bank (:func:`merge_folds` of the fed folds' own banks); empty ones where nothing was fed."""
        try:
            self._file.flush()  # what a full disk refused at the last write shows here, not at the first read
        except OSError as e:
            raise self._disk_error(e) from e
        if self._own is None:
            return [torch.zeros((0, 0)) for _ in range(self.k)]
        own = [b.close() for b in self._own]
        t = time.perf_counter()
        out = merge_folds(own, self._merge)
        self._merged_s += time.perf_counter() - t
        return out

    def close(self) -> None:
        self._file.close()


@dataclass
class CrossFit:
    """The cross-fitted scores (C, K), columns in ``names`` order (the scorer's), one row per readable training image,
    and what they cost."""

    scores: np.ndarray
    names: tuple[str, ...]
    folds: int
    kept_mb: float  # the training images' patches kept on disk while fitting
    banks_s: float  # the fold banks' merges (their features came in the fit's own pass)
    scoring_s: float  # each image's scores from its distances (crossfit_distances' nearest_s: the distances)


@dataclass
class FoldDistances:
    """Every readable training image's nearest-bank distances (1, 1, h, w) from the bank of the folds it is not in,
    and its size (H, W), by image index; each image's fold; and what they cost."""

    distances: dict[int, torch.Tensor]
    sizes: dict[int, tuple[int, int]]
    folds: list[int]
    k: int
    kept_mb: float
    banks_s: float
    nearest_s: float


@torch.no_grad()
def crossfit_distances(cfg: Config, stream: ImageStream, feed: FoldFeed,
                       progress: Callable[[int, str], None] | None = None) -> FoldDistances:
    """Every training image ``feed`` was fed, its kept patches' distances to the bank of the folds it is not in.
    ``stream``: the training images, whose headers give each one's size (its map is made at that size, as a new
    image's)."""
    banks = feed.banks()
    if any(bank.shape[0] == 0 for bank in banks):
        raise ValueError(f"{_WHAT}: a fold's bank is empty (every readable training image is in that fold); give more "
                         f"readable normal training images or use {_WITHOUT}")
    stride = block_plan(cfg.patchcore.backbone)[cfg.patchcore.layers[0]].stride  # the features' grid (embed)
    t0 = time.perf_counter()
    # Every image's distances in one block, allocated first: small results kept one by one between the large
    # transient distance matrices fragmented the heap (the process grew by about the matrix's size per image).
    offsets = np.cumsum([0] + [feed.rows(i) for i in range(len(stream))])
    block = torch.empty(int(offsets[-1]))
    distances: dict[int, torch.Tensor] = {}
    sizes: dict[int, tuple[int, int]] = {}
    done = 0
    for fold, bank in enumerate(banks):  # one fold's bank at a time
        bank_sq = bank.pow(2).sum(1)
        for index in (i for i in range(len(stream)) if feed.folds[i] == fold):
            done += 1
            patches = feed.patches(index)
            if progress is not None:
                progress(done, "cross-fit distances")
            if patches is None:  # unreadable in the fit's pass, counted there
                continue
            path = stream.samples[index].path
            try:
                size = stream.shape(index)
            except OSError as e:
                raise RuntimeError(f"the cross-fit could not open {path} again ({e}): did it change while "
                                   "fitting?") from None
            grid = (size[0] // stride, size[1] // stride)
            if grid[0] * grid[1] != patches.shape[0]:
                raise RuntimeError(f"the cross-fit kept {patches.shape[0]} patches of {path}, but its {size[0]} x "
                                   f"{size[1]} px image makes {grid[0]} x {grid[1]}: did it change while fitting?")
            part = block[offsets[index]:offsets[index + 1]]
            part.copy_(nearest_distance(patches, bank, bank_sq))
            distances[index] = part.view(1, 1, *grid)
            sizes[index] = (int(size[0]), int(size[1]))
    return FoldDistances(distances, sizes, list(feed.folds), len(banks), round(feed.kept_bytes / 2**20, 1),
                         round(feed.merge_s, 2), time.perf_counter() - t0)


@dataclass
class FoldPosition:
    """The cross-fitted smoothed maps of each fold's images, summed per cell of a G x G grid over the image: the
    normal maps' mean and spread by location (``map_z``), of every fold or of every fold but one."""

    counts: list[int]
    first: torch.Tensor  # (k, G, G) float64: the sum of the maps' cell means
    second: torch.Tensor  # (k, G, G) float64: the sum of their squares

    def stats(self, leave_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, spread), each (G, G), over every fold but ``leave_out``. The spread is floored at a tenth of its
        median over the grid (1 where that is 0), so that a cell where every normal map agreed cannot make any
        small rise there an alarm."""
        keep = [i for i in range(len(self.counts)) if i != leave_out]
        n = max(sum(self.counts[i] for i in keep), 1)
        mean = self.first[keep].sum(0) / n
        var = (self.second[keep].sum(0) / n - mean ** 2).clamp_min(0.0)
        spread = var.sqrt()
        floor = 0.1 * float(spread.median())
        return mean.float(), spread.clamp_min(floor if floor > 0 else 1.0).float()


@torch.no_grad()
def fold_position(cfg: Config, fold: FoldDistances, sigma: float) -> FoldPosition:
    """The cross-fitted maps of ``fold`` smoothed with ``sigma`` as the model smooths them, summed per fold on the
    ``patchcore.position_grid`` grid (each map area-averaged into its cells). Every fold's others must hold at least 2
    maps (a spread needs two)."""
    g = cfg.patchcore.position_grid
    blur = GaussianBlur(sigma)
    first = torch.zeros(fold.k, g, g, dtype=torch.float64)
    second = torch.zeros(fold.k, g, g, dtype=torch.float64)
    counts = [0] * fold.k
    for index, distances in fold.distances.items():
        cells = F.adaptive_avg_pool2d(distance_maps(distances, fold.sizes[index], blur)[1], g)[0, 0].double()
        f = fold.folds[index]
        first[f] += cells
        second[f] += cells ** 2
        counts[f] += 1
    least = sum(counts) - max(counts)
    if least < 2:
        raise ValueError(f"patchcore.position_grid needs the normal maps of at least 2 training images beside each "
                         f"fold, and one fold has {least} beside it: give more normal training images, or fit with "
                         "patchcore.position_grid=0")
    return FoldPosition(counts, first, second)


@torch.no_grad()
def crossfit_scores(cfg: Config, fold: FoldDistances, space: MemoryBank, sigma: float,
                    position: FoldPosition | None = None) -> CrossFit:
    """Every image of ``fold`` scored from its cross-fitted distances as the model scores a new image (``space``: the
    fit's memory bank; ``sigma``: the calibration's); map_z, where computed, against ``position``'s maps of the other
    folds."""
    t0 = time.perf_counter()
    order = sorted(fold.distances)
    row = {index: i for i, index in enumerate(order)}
    names = PATCHCORE.score_names(cfg)
    scores = np.zeros((len(order), len(names)))  # allocated first, as crossfit_distances' block
    for f in range(fold.k):  # one fold's grid at a time
        memory = space.with_bank(space.bank)  # the same tensors, a grid of its own
        if position is not None:
            memory.set_position(*position.stats(leave_out=f), sigma)
        scorer = PATCHCORE.build_scorer(cfg, {"memory": memory})
        scorer.set_sigma(sigma)
        for index in (i for i in order if fold.folds[i] == f):
            scores[row[index]] = scorer.map_outputs(fold.sizes[index], fold.distances[index])[0][0].double().numpy()
    return CrossFit(scores, tuple(names), fold.k, fold.kept_mb, fold.banks_s,
                    round(time.perf_counter() - t0, 2))
