"""Peak memory and time of pixel AUROC and AUPRO on a test set's worth of maps, each in a fresh process.

How much each metric grows the process (peak RSS) and how long it takes.

    python benchmarks/metrics_memory.py                 # 582 maps of 256 x 256 (the shared magnetic tiles' test set)
    python benchmarks/metrics_memory.py --n 2000 --size 256
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np
from scgan.evaluation.metrics import aupro, pixel_auroc
n, size, metric = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
maps = rng.random((n, size, size), dtype=np.float32)
masks = np.zeros((n, size, size), bool)
masks[: 2 * n // 3, size // 3: size // 3 + size // 12, size // 3: size // 3 + size // 8] = True
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
value = (pixel_auroc if metric == "pixel_auroc" else aupro)(maps, masks)
print(json.dumps({"metric": metric, "value": value, "seconds": round(time.perf_counter() - start, 2),
                  "grew_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=582, help="maps")
    ap.add_argument("--size", type=int, default=256, help="side of each map")
    args = ap.parse_args()
    for metric in ("pixel_auroc", "aupro"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.n), str(args.size), metric], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out)
        print(f"{metric}: {r['value']:.4f} in {r['seconds']} s, the process grew by {r['grew_mb']} MB "
              f"({args.n} maps of {args.size} x {args.size})")


if __name__ == "__main__":
    main()
