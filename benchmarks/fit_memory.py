"""Peak memory of the PatchCore detector's streaming fit against the number of images: generated patch features
(no images, no backbone) through the fit's own merge-reduce (:func:`scgan.training.patchcore.merge_reduce`), with
the default preset's bank size, projection, max_patches, whitening and feature width.

Each image count runs in a fresh process, so that every peak RSS (``ru_maxrss``) is that fit's own; the baseline
is the same process after importing torch and drawing one image's features. Bounded memory shows as a peak that
does not grow with the images; the time grows linearly (every patch passes one greedy merge). What a fit holding
everything would need is printed beside it: the patches (N x patches x D float32) and the decoded images at the
working resolution (N x 320 x 320 x 3 bytes, what the dataset cache held before the fit streamed).

    python benchmarks/fit_memory.py --images 1000,10000,100000 --output results/fit_memory.json   # hours at 100k
    python benchmarks/fit_memory.py --quick         # ~1 min: 0.04 M and 0.4 M patches through a 20,000-row buffer
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def one_fit(images: int, patches: int, seed: int, overrides: dict[str, int]) -> dict:
    """Run the merge-reduce over ``images`` images of ``patches`` generated features each (``overrides``: patchcore
    settings other than the preset's); its facts and peaks."""
    import torch

    from scgan.config import load_config
    from scgan.models.patchcore.backbone import block_plan
    from scgan.training.patchcore import merge_reduce

    torch.set_num_threads(1)
    p = load_config("default", overrides={f"patchcore.{k}": v for k, v in overrides.items()}).patchcore
    channels = [block_plan(p.backbone)[i].channels for i in p.layers]
    dims = sum(channels)
    # Normal patches: a mixture of 256 modes in D dimensions (a bank has something to choose), per image a seeded
    # draw, so that any image's features are the same in every run.
    centres = torch.randn(256, dims, generator=torch.Generator().manual_seed(seed)) * 3

    def features(index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        which = torch.randint(256, (patches,), generator=g)
        return centres[which] + torch.randn(patches, dims, generator=g)

    features(0)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    fitted = merge_reduce(features, images, p, channels, torch.Generator().manual_seed(seed))
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": images, "patches_per_image": patches, "dims": dims, "patches": fitted.patches,
            "bank": int(fitted.bank.shape[0]), "bank_size": p.bank_size, "max_patches": p.max_patches,
            "sample_images": fitted.sample_images,
            "wall_s": round(wall, 1), "coreset_s": round(fitted.coreset_s, 1), "baseline_rss_mb": round(baseline),
            "peak_rss_mb": round(peak), "all_patches_mb": round(fitted.patches * dims * 4 / 2**20),
            "decoded_images_mb": round(images * 320 * 320 * 3 / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="1000,10000,100000", help="image counts, one fresh process each")
    ap.add_argument("--patches", type=int, default=1600, help="patches per image (1600: 320 x 320 at stride 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-patches", type=int, default=None, help="patchcore.max_patches (default: the preset's)")
    ap.add_argument("--bank-size", type=int, default=None, help="patchcore.bank_size (default: the preset's)")
    ap.add_argument("--quick", action="store_true",
                    help="100 and 1000 images of 400 patches, max_patches 20000, bank 1024: checks the script")
    ap.add_argument("--output", default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's own run
    args = ap.parse_args()
    if args.quick:
        args.images, args.patches, args.max_patches, args.bank_size = "100,1000", 400, 20_000, 1024
    overrides = {k: v for k, v in (("max_patches", args.max_patches), ("bank_size", args.bank_size)) if v}
    if args.one is not None:
        print(json.dumps(one_fit(args.one, args.patches, args.seed, overrides)))
        return
    counts, patches = [int(n) for n in args.images.split(",")], args.patches
    extra = [x for k, v in overrides.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    rows = []
    print("| images | patches | merges' time s | whole fit s | baseline RSS MB | peak RSS MB | all patches MB | "
          "decoded images MB |")
    print("|---|---|---|---|---|---|---|---|")
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--patches", str(patches), "--seed",
                              str(args.seed), *extra], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"| {n:,} | {row['patches']:,} | {row['coreset_s']} | {row['wall_s']} | {row['baseline_rss_mb']} | "
              f"{row['peak_rss_mb']} | {row['all_patches_mb']:,} | {row['decoded_images_mb']:,} |", flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"runs": rows, "command": " ".join(sys.argv)}, indent=2))


if __name__ == "__main__":
    main()
