"""Time the synthetic anomalies as training runs them: ms per batch of 16 on the CPU, one thread.

    python benchmarks/bench_synthetic.py                 # copypaste, perlin, mixture at S = 64 and 128
    python benchmarks/bench_synthetic.py --sizes 256 --names perlin

Prints wall and process (CPU) milliseconds, and each one's ratio to copypaste: on a shared CPU the
absolute numbers move with the load, the ratios much less.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from scgan.data.augment import build_augmentation


def time_augmentation(name: str, size: int, batch: int = 16, repeats: int = 20) -> tuple[float, float]:
    """Median wall and process milliseconds of one apply() on a (batch, 3, size, size) batch."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    aug = build_augmentation(name)
    gen = torch.Generator().manual_seed(0)
    aug.apply(x, gen)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        aug.apply(x, gen)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return 1000 * sorted(walls)[repeats // 2], 1000 * sorted(cpus)[repeats // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--names", nargs="+", default=["copypaste", "perlin", "mixture"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for size in args.sizes:
        base = None
        for name in args.names:
            wall, cpu = time_augmentation(name, size)
            base = base or (wall, cpu)
            print(f"S={size:4d} {name:16s} wall {wall:7.2f} ms  cpu {cpu:7.2f} ms  "
                  f"(x{wall / base[0]:.2f} / x{cpu / base[1]:.2f} of {args.names[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
