"""Draw every augmentation on a texture and an object image (like the paper's Figs. 5, 6 and 13).

    python scripts/plot_augmentations.py                       # demo weave + washer -> docs/augmentations.png
    python scripts/plot_augmentations.py --image my.png --output out.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from scgan.data.augment import build_augmentation  # noqa: E402
from scgan.data.demo import render_demo_image  # noqa: E402
from scgan.data.io import ImageReadError, image_to_tensor, load_image, tensor_to_image  # noqa: E402
from scgan.utils.atomic import atomic_write_with  # noqa: E402

# (title, augmentation, N): the paper's N ablation for CopyPaste, then the Table 6 methods at N = 30.
COLUMNS: list[tuple[str, str, int]] = [
    ("CopyPaste N=10", "copypaste", 10),
    ("CopyPaste N=30", "copypaste", 30),
    ("CopyPaste N=50", "copypaste", 50),
    ("CopyPaste N=100", "copypaste", 100),
    ("CopyPaste colour", "copypaste_color", 30),
    ("Cutout", "cutout", 30),
    ("Cutout colour", "cutout_color", 30),
    ("Confetti", "confetti", 30),
]


def augmentation_grid(rows: list[tuple[str, np.ndarray]], seed: int = 0) -> plt.Figure:
    """A figure with one row per (label, uint8 (S, S, 3) image): the original, then each of COLUMNS."""
    fig, axes = plt.subplots(len(rows), len(COLUMNS) + 1, figsize=(1.6 * (len(COLUMNS) + 1), 1.75 * len(rows)),
                             squeeze=False)
    for r, (label, img) in enumerate(rows):
        x = image_to_tensor(img)[None]  # (1, 3, S, S)
        cells = [("Original", img)]
        for c, (title, name, n) in enumerate(COLUMNS):
            gen = torch.Generator().manual_seed(seed * 1000 + r * 100 + c)
            cells.append((title, tensor_to_image(build_augmentation(name, n_patches=n)(x, gen))[0]))
        for c, (title, cell) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(cell)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle("Augmentations (each patch 1% of the image; N = 30 unless stated)", fontsize=10)
    fig.tight_layout()
    return fig


def figure_main(argv: list[str] | None, description: str, output: Path, size: int, demo_rows, draw) -> int:
    """The command line both figure scripts share: --image/--output/--size/--seed, then
    ``draw(rows, seed)`` over (label, uint8 image) rows (``demo_rows(size, seed)`` without --image)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image", type=Path, help="an image of your own (default: the demo images)")
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument("--size", type=int, default=size, help="side S the image is resized to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.image is not None:
            rows = [(args.image.name, load_image(args.image, args.size))]
        else:
            rows = demo_rows(args.size, args.seed)
    except (FileNotFoundError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fig = draw(rows, args.seed)
    atomic_write_with(args.output, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    print(f"wrote {args.output}")
    return 0


def demo_rows(size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """A demo texture and a demo object, normal."""
    return [("weave (texture)", render_demo_image("weave", "good", size, seed=seed)[0]),
            ("washer (object)", render_demo_image("washer", "good", size, seed=seed)[0])]


def main(argv: list[str] | None = None) -> int:
    return figure_main(argv, __doc__.splitlines()[0], Path("docs/augmentations.png"), 256, demo_rows,
                       augmentation_grid)


if __name__ == "__main__":
    sys.exit(main())
