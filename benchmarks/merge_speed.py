"""The cost of one merge of the PatchCore detector's streaming fit (:func:`scgan.training.patchcore.merge_bank`) on
generated features, with the one fixed projection every merge uses against a fresh projection drawn for each merge.

A bank of ``--bank`` rows is chosen from a first buffer of ``--rows`` generated rows (a mixture of 256 modes in
``--dims`` dimensions, as benchmarks/fit_memory.py draws them); then ``--merges`` more buffers of the same size are
merged into it. For each merge it prints the CPU seconds and how many new rows lay beyond the bank's radius (the
candidates the merge considered). One thread.

    python benchmarks/merge_speed.py            # ~2 minutes on one core
"""
from __future__ import annotations

import argparse
import time


def run(fresh: bool, rows: int, dims: int, bank_size: int, projection: int, merges: int, seed: int) -> None:
    import torch

    import scgan.training.patchcore as pc
    from scgan.models.patchcore.coreset import projection_matrix

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(256, dims, generator=g) * 3

    def features(n: int) -> torch.Tensor:
        return centres[torch.randint(256, (n,), generator=g)] + torch.randn(n, dims, generator=g)

    counted = []
    farthest, fixed = pc._farthest_first, pc.coreset_projection
    pc._farthest_first = lambda x, *a: (counted.append(x.shape[0]), farthest(x, *a))[1]
    if fresh:
        pc.coreset_projection = lambda d, k: projection_matrix(d, k, g) if 0 < k < d else None
    try:
        t = time.process_time()
        bank = pc.merge_bank(features(0)[:0], features(rows), bank_size, projection, g)
        name = "fresh" if fresh else "fixed"
        print(f"{name} projection: first buffer's greedy coreset {time.process_time() - t:.1f} s")
        for i in range(merges):
            new = features(rows)
            counted.clear()
            t = time.process_time()
            bank = pc.merge_bank(bank, new, bank_size, projection, g)
            print(f"  merge {i + 1}: {time.process_time() - t:.1f} s, {counted[0] if counted else 0:,} of {rows:,} new "
                  "rows beyond the bank's radius")
    finally:
        pc._farthest_first, pc.coreset_projection = farthest, fixed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows per buffer (the default preset's max_patches)")
    ap.add_argument("--dims", type=int, default=152, help="feature width (the default preset's)")
    ap.add_argument("--bank", type=int, default=4096)
    ap.add_argument("--projection", type=int, default=64)
    ap.add_argument("--merges", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for fresh in (False, True):
        run(fresh, args.rows, args.dims, args.bank, args.projection, args.merges, args.seed)


if __name__ == "__main__":
    main()
