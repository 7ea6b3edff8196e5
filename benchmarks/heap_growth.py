"""Why the cross-fit keeps its distances in one block: a process's peak RSS when a loop keeps each image's small
nearest-neighbour result as it comes (between the large transient distance matrices), against writing them into one
block allocated first, as ``scgan.training.crossfit.crossfit_distances`` does.

    python benchmarks/heap_growth.py            # two fresh processes, one thread each; prints their peak RSS

Each variant: 200 images of 1600 patches (a 320 px image's grid), 152 dimensions, kept float16 in a temporary file and
read back as the cross-fit reads them, against a bank of 4096 rows.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile

IMAGES, PATCHES, DIMS, BANK = 200, 1600, 152, 4096


def one(variant: str) -> float:
    """Run the loop one way in this process; its peak RSS in MB."""
    import numpy as np
    import torch

    from scgan.models.patchcore.coreset import nearest_distance

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(BANK, DIMS, generator=gen)
    bank_sq = bank.pow(2).sum(1)
    size = PATCHES * DIMS * 2
    kept = {}
    block = torch.empty(IMAGES * PATCHES) if variant == "block" else None
    with tempfile.TemporaryFile() as f:
        for _ in range(IMAGES):
            f.write(torch.randn(PATCHES, DIMS, generator=gen).half().numpy().tobytes())
        for i in range(IMAGES):
            f.seek(i * size)
            patches = torch.from_numpy(np.frombuffer(f.read(size), dtype=np.float16).astype(np.float32).reshape(
                PATCHES, DIMS))
            if block is None:
                kept[i] = nearest_distance(patches, bank, bank_sq).reshape(1, 1, 40, 40)
            else:
                part = block[i * PATCHES:(i + 1) * PATCHES]
                part.copy_(nearest_distance(patches, bank, bank_sq))
                kept[i] = part.view(1, 1, 40, 40)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    if len(sys.argv) > 1:
        print(f"{one(sys.argv[1]):.0f}")
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for variant, what in (("each", "each result kept as it comes"), ("block", "one block allocated first")):
        peak = subprocess.run([sys.executable, __file__, variant], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
        print(f"{what}: peak RSS {peak} MB")


if __name__ == "__main__":
    main()
