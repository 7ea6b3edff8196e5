"""How long writing the demo data set takes (what ``scgan demo`` does before it trains), per image size.

    python benchmarks/bench_demo_data.py                 # the default set (128 px), 3 repeats
    python benchmarks/bench_demo_data.py --sizes 64,128,256 --repeats 1

Prints one Markdown row per size: best and median seconds over the repeats, and images written per second.
Timings mean something only on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scgan.data.demo import DEMO_CATEGORIES, make_demo_dataset
from scgan.utils.tables import markdown_table, num


def time_once(size: int, n_train: int, n_test: int) -> float:
    """Seconds to write the demo set at ``size`` px into a fresh temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        t = time.perf_counter()
        make_demo_dataset(Path(tmp), n_train=n_train, n_test=n_test, image_size=size, seed=0)
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="128", help="image sizes, comma-separated (default: the demo's 128)")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    n_images = len(DEMO_CATEGORIES) * (args.n_train + args.n_test)
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        times = [time_once(size, args.n_train, args.n_test) for _ in range(args.repeats)]
        rows.append([str(size), str(n_images), num(min(times), 2), num(statistics.median(times), 2),
                     num(n_images / min(times), 0)])
        print(f"S={size}: {', '.join(num(t, 2) for t in times)} s", file=sys.stderr, flush=True)
    print(markdown_table(["S", "images", "best s", "median s", "images/s (best)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
