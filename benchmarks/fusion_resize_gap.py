"""How far the fusion's SCGAN input lies from what the SCGAN was trained on: each file brought to the PatchCore
detector's input (320 px on the short side, its aspect kept) and then to 64 x 64 inside the fused graph, against the
file resized by Pillow straight to 64 x 64 (as the `scgan` preset's data are). Prints the largest and the mean absolute
difference in the images' [-1, 1] units, per category, over every tenth test image (at most 20).

    python benchmarks/fusion_resize_gap.py --data ../shared/data
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scgan.config import get_preset
from scgan.data.io import image_to_array, prepare_image
from scgan.models.fusion.kind import FUSION
from scgan.models.fusion.scorer import restoration_input

CATEGORIES = {"bottle": "mvtec_ad/bottle/test/*/*.png", "metal_nut": "mvtec_ad/metal_nut/test/*/*.png",
              "magnetic_tile": "magnetic_tile/test/*/*.png",
              "magnetic_tile_native": "magnetic_tile_native/test/*/*.jpg"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = ap.parse_args()
    cfg = get_preset("fusion")
    spec, size = FUSION.input_spec(cfg), cfg.model.image_size
    for name, pattern in CATEGORIES.items():
        files = sorted(args.data.glob(pattern))[::10][:20]
        if not files:
            print(f"{name}: no images under {args.data}")
            continue
        largest, means = 0.0, []
        for path in files:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            fused = restoration_input(torch.from_numpy(image_to_array(prepare_image(rgb, spec))[None]), size)
            gap = (fused - torch.from_numpy(image_to_array(prepare_image(rgb, size))[None])).abs()
            largest, means = max(largest, float(gap.max())), [*means, float(gap.mean())]
        print(f"{name}: {len(files)} images, largest difference {largest:.4f}, mean {np.mean(means):.4f}")


if __name__ == "__main__":
    main()
