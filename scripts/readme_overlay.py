"""The README's picture in docs/overlay.png: an image and its overlay side by side, from a fitted model.

    python scripts/readme_overlay.py --checkpoint runs/demo/train/model.pt --output docs/overlay.png \\
        runs/demo/data/washer/test/scratch/000.png

Both halves are enlarged (nearest neighbour) to ``--height`` pixels so that a small demo image stays legible.
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from scgan.inference.detector import Detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--output", default="docs/overlay.png")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("image")
    args = ap.parse_args()
    r = Detector.load(args.checkpoint).predict(args.image)
    over = r.overlay()
    scale = args.height / r.image.shape[0]
    size = (round(r.image.shape[1] * scale), args.height)
    left = Image.fromarray(r.image).resize(size, Image.Resampling.NEAREST)
    right = over.resize((round(over.width * scale), round(over.height * scale)), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (left.width + 8 + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    canvas.save(args.output, optimize=True)
    print(f"wrote {args.output}: {r.decision}, {r.score_name} {r.score:.3g} (threshold {r.threshold:.3g}), "
          f"{np.asarray(canvas).shape[1]} x {np.asarray(canvas).shape[0]} px")


if __name__ == "__main__":
    main()
