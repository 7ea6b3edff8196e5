"""Choosing the memory bank: greedy k-center coreset selection (PatchCore, Roth et al., CVPR 2022), and the
nearest-neighbour distances a bank gives."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def random_projection(features: torch.Tensor, dims: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, D) features projected to ``dims`` Gaussian random directions, scaled by 1 / sqrt(dims) (distances are
    kept in expectation: Johnson-Lindenstrauss); ``dims`` = 0 or >= D returns the features as they are."""
    n, d = features.shape
    if dims <= 0 or dims >= d:
        return features
    return features @ projection_matrix(d, dims, generator, features.dtype).to(features.device)


def projection_matrix(d: int, dims: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (d, dims) Gaussian matrix of :func:`random_projection`, scaled by 1 / sqrt(dims): drawn once, it projects
    several blocks of rows alike."""
    return torch.randn(d, dims, generator=generator, dtype=dtype) / dims**0.5


@torch.no_grad()
def greedy_coreset(features: torch.Tensor, n: int, start: int = 0, progress=None) -> torch.Tensor:
    """Indices of ``n`` rows of ``features`` (N, D) chosen by greedy k-center: start at row ``start``, then add
    the row farthest (Euclidean) from every row chosen so far, until ``n`` are chosen.

    Each step costs one pass over the N rows (the squared distance to the newest centre, |x|^2 - 2 x.c + |c|^2,
    updates the running minimum), so the whole costs N x n x D. ``progress(k)`` is called with the count chosen so
    far every 256 steps. Ties go to the lowest index. Returns int64 (min(n, N),).
    """
    count, _ = features.shape
    n = min(int(n), count)
    if n <= 0:
        return torch.zeros(0, dtype=torch.int64)
    x = features.float().contiguous()
    x_sq = x.pow(2).sum(1)
    chosen = torch.empty(n, dtype=torch.int64)
    chosen[0] = start
    nearest = torch.addmv(x_sq, x, x[start], alpha=-2.0) + x_sq[start]
    for k in range(1, n):
        i = int(torch.argmax(nearest))
        chosen[k] = i
        torch.minimum(nearest, torch.addmv(x_sq, x, x[i], alpha=-2.0).add_(x_sq[i]), out=nearest)
        if progress is not None and k % 256 == 0:
            progress(k)
    return chosen


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor | None = None,
                     chunk: int = 2048) -> torch.Tensor:
    """Euclidean distance of each query (P, D) to its nearest bank row (M, D): (P,).

    Computed as |q|^2 + |m|^2 - 2 q.m over bank chunks of ``chunk`` rows (memory P x chunk, a fixed loop that
    ONNX export unrolls), clamped at 0 before the square root. ``bank_sq`` is (M,) = |m|^2 when precomputed.
    """
    bank_sq = bank.pow(2).sum(1) if bank_sq is None else bank_sq
    best = None
    for start in range(0, bank.shape[0], chunk):
        part = torch.addmm(bank_sq[start:start + chunk].unsqueeze(0), queries, bank[start:start + chunk].t(),
                           alpha=-2.0).amin(dim=1)
        best = part if best is None else torch.minimum(best, part)
    return (best + queries.pow(2).sum(1)).clamp_min(0.0).sqrt()


class MergeBuffer:
    """A bank and the rows waiting to join it. Rows come in blocks (:meth:`add`) and are merged in by ``merge(bank,
    rows)`` whenever ``cap`` or more wait, and at :meth:`close`: memory holds the bank and at most ``cap`` rows plus
    one block. The one buffer of the streaming fit, the cross-fitted folds and an update; ``merge_s`` is the time
    spent merging (the cat of the waiting blocks included)."""

    def __init__(self, bank: torch.Tensor, cap: int, merge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.bank, self.cap, self._merge = bank, int(cap), merge
        self._waiting: list[torch.Tensor] = []
        self._rows = 0
        self.merge_s = 0.0

    def add(self, rows: torch.Tensor) -> None:
        self._waiting.append(rows)
        self._rows += rows.shape[0]
        if self._rows >= self.cap:
            self.flush()

    def flush(self) -> None:
        """Merge the waiting rows into the bank now (nothing where none wait)."""
        if not self._waiting:
            return
        t = time.perf_counter()
        new = torch.cat(self._waiting) if len(self._waiting) > 1 else self._waiting[0]  # one block: no copy
        self._waiting, self._rows = [], 0
        self.bank = self._merge(self.bank, new)
        self.merge_s += time.perf_counter() - t

    def close(self) -> torch.Tensor:
        """The bank with every row added merged in."""
        self.flush()
        return self.bank
