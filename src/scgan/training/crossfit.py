"""Cross-fitted normal scores of a PatchCore detector (``score.threshold_source = crossfit``): every normal training
image scored by a memory bank that never saw it, so that the threshold rests on all of them, not on the validation
images alone.

The training images are split into k seeded folds. One pass through the backbone feeds k streaming coresets at once:
each image's patches, brought into the fitted bank's space (its scale and whitening, estimated on a sample of all
the images as the fit's are), join their own fold's buffer, and a full buffer is merged into that fold's bank by
:func:`scgan.training.patchcore.merge_bank`, as the fit's one bank is. The buffers together hold at most
``patchcore.max_patches`` rows (each fold ``max_patches / k``, at least ``bank_size``). The bank that scores fold j is
then the same merge of the other folds' banks together (:func:`fold_banks`). A second pass scores each
image with its fold's bank through the model's own scorer (the calibration's sigma), so its scores are those a new
image would get from a bank of (k - 1) / k of the training images: a little higher than from the full bank, which
errs towards fewer false alarms.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from scgan.config import Config
from scgan.data.datasets import ImageStream
from scgan.data.io import image_to_tensor, to_channels
from scgan.models.patchcore.coreset import MergeBuffer
from scgan.models.patchcore.kind import PATCHCORE
from scgan.models.patchcore.model import MemoryBank

# What the fit lends (scgan.training.patchcore, which calls this module): an image's patch features (N, D) from its
# uint8 (H, W, C) pixels, and the merge of new rows (N, D) into a bank (M, D) (its merge_bank, bounded by bank_size).
Features = Callable[[np.ndarray], torch.Tensor]
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


@dataclass
class CrossFit:
    """The cross-fitted scores (C, K), columns in ``names`` order (the scorer's), one row per readable training image,
    and what they cost."""

    scores: np.ndarray
    names: tuple[str, ...]
    folds: int
    features_s: float  # the pass that fed the fold banks (coresets included)
    scoring_s: float  # the pass that scored each image with its fold's bank


@torch.no_grad()
def fold_banks(cfg: Config, stream: ImageStream, space: MemoryBank, folds: list[int], features: Features,
               merge_into: Merge, progress: Callable[[int, str], None] | None = None) -> list[torch.Tensor]:
    """Each fold's memory bank (M_j, D), in the space of the fitted bank ``space``, of the patches of every image
    outside the fold.

    Merge and reduce: each image's patches are merged once, into a bank of its own fold's images (the fit's streaming
    merge, ``merge_into``); fold j's bank is then the same merge of the other folds' banks together (a coreset of
    coresets, as the fit's bank is one of its buffers'). Each patch thus passes one merge, not k - 1."""
    k = max(folds) + 1
    cap = max(cfg.patchcore.bank_size, cfg.patchcore.max_patches // k)
    empty = space.bank.new_zeros((0, space.bank.shape[1]))
    own = [MergeBuffer(empty, cap, merge_into) for _ in range(k)]
    for done, index in enumerate(range(len(stream)), 1):
        image = stream.read(index)
        if progress is not None:
            progress(done, "cross-fit banks")
        if image is not None:
            own[folds[index]].add(space.project(features(image)))
    own_banks = [b.close() for b in own]
    out = []
    for j in range(k):
        others = [own_banks[i] for i in range(k) if i != j and own_banks[i].shape[0]]
        out.append(merge_into(empty, torch.cat(others)) if others else empty)  # empty: crossfit_scores says so
    return out


@torch.no_grad()
def crossfit_scores(cfg: Config, stream: ImageStream, space: MemoryBank, sigma: float, channels: int,
                    features: Features, merge_into: Merge,
                    progress: Callable[[int, str], None] | None = None) -> CrossFit:
    """Every readable training image of ``stream`` scored by the bank of the folds it is not in (``space``: the fit's
    memory bank, whose scale and whitening the fold banks share; ``sigma``: the calibration's; ``channels``: what the
    model takes; ``features`` and ``merge_into``: the fit's, see :data:`Features`)."""
    if len(stream) < 2:
        raise ValueError("score.threshold_source = crossfit needs at least 2 normal training images")
    folds = fold_assignment(len(stream), cfg.score.crossfit_folds, cfg.seed)
    skipped = len(stream.skipped)  # the fit's count of unreadable files: the passes below meet the same ones again
    t0 = time.perf_counter()
    banks = fold_banks(cfg, stream, space, folds, features, merge_into, progress)
    t1 = time.perf_counter()
    if any(bank.shape[0] == 0 for bank in banks):
        raise ValueError("score.threshold_source = crossfit: a fold's bank is empty (every readable training image is "
                         "in that fold); give more readable normal training images or use validation")
    whitening = (space.mean, space.whitening) if space.whitened else None
    scorers = []
    for bank in banks:
        scorer = PATCHCORE.build_scorer(cfg, {"memory": MemoryBank(bank, space.digest, space.scale, whitening)})
        scorer.set_sigma(sigma)
        scorers.append(scorer.eval())
    rows = []
    for done, index in enumerate(range(len(stream)), 1):
        image = stream.read(index)
        if progress is not None:
            progress(done, "cross-fit scores")
        if image is not None:
            x = image_to_tensor(to_channels(image, channels))[None]
            rows.append(scorers[folds[index]].run(x)[0][0].float().numpy())
    del stream.skipped[skipped:]
    names = scorers[0].names
    scores = np.stack(rows) if rows else np.zeros((0, len(names)))
    return CrossFit(scores.astype(np.float64), tuple(names), len(banks), round(t1 - t0, 2),
                    round(time.perf_counter() - t1, 2))
