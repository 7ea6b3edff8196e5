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
the full bank, which errs towards fewer false alarms.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from scgan.config import Config
from scgan.data.datasets import ImageStream
from scgan.models.patchcore.backbone import block_plan
from scgan.models.patchcore.coreset import MergeBuffer
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.patchcore.model import MemoryBank

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
            raise ValueError("score.threshold_source = crossfit needs at least 2 normal training images")
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
                       f"({e.strerror or e}): free disk space there, or use score.threshold_source=validation")

    @property
    def kept_bytes(self) -> int:
        """The size of the kept patches' file."""
        return sum(rows * dims * dtype.itemsize for _, rows, dims, dtype in self._kept.values())

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
    scoring_s: float  # scoring each image with its fold's bank


@torch.no_grad()
def crossfit_scores(cfg: Config, stream: ImageStream, feed: FoldFeed, space: MemoryBank, sigma: float,
                    progress: Callable[[int, str], None] | None = None) -> CrossFit:
    """Every training image ``feed`` was fed scored by the bank of the folds it is not in (``space``: the fit's memory
    bank, whose scale and whitening the fold banks share; ``sigma``: the calibration's). ``stream``: the training
    images, whose headers give each one's size (its map is made at that size, as a new image's)."""
    banks = feed.banks()
    if any(bank.shape[0] == 0 for bank in banks):
        raise ValueError("score.threshold_source = crossfit: a fold's bank is empty (every readable training image is "
                         "in that fold); give more readable normal training images or use validation")
    whitening = (space.mean, space.whitening) if space.whitened else None
    stride = block_plan(cfg.patchcore.backbone)[cfg.patchcore.layers[0]].stride  # the features' grid (embed)
    t0 = time.perf_counter()
    rows: dict[int, np.ndarray] = {}
    done = 0
    for fold, bank in enumerate(banks):  # one fold's scorer at a time
        scorer = PATCHCORE.build_scorer(cfg, {"memory": MemoryBank(bank, space.digest, space.scale, whitening)})
        scorer.set_sigma(sigma)
        scorer.eval()
        for index in (i for i in range(len(stream)) if feed.folds[i] == fold):
            done += 1
            patches = feed.patches(index)
            if progress is not None:
                progress(done, "cross-fit scores")
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
            distances = scorer.nearest(patches).reshape(1, 1, *grid)
            rows[index] = scorer.map_outputs(size, distances)[0][0].float().numpy()
    names = scorer.names
    scores = np.stack([rows[i] for i in sorted(rows)]) if rows else np.zeros((0, len(names)))
    return CrossFit(scores.astype(np.float64), tuple(names), len(banks), round(feed.kept_bytes / 2**20, 1),
                    round(feed.merge_s, 2),
                    round(time.perf_counter() - t0, 2))
