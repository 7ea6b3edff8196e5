"""Draw each synthetic-anomaly source with the mask of the pixels it changed, on the demo images.

    python scripts/plot_synthetic.py          # demo weave, washer, grey weave -> docs/synthetic_anomalies.png
    python scripts/plot_synthetic.py --image my.png --output out.png

The images are the demo data set's (``scgan.data.demo``, as ``make_demo_dataset`` draws them); the grey
one is the weave converted to grey and back to three equal channels, as the data layer delivers grey images.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from scgan.data.augment import build_augmentation  # noqa: E402
from scgan.data.io import image_to_tensor, tensor_to_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot_augmentations import demo_rows, figure_main  # noqa: E402

# (row title, augmentation, options, seed): several seeds where one draw shows little of the variety.
ROWS: list[tuple[str, str, dict[str, Any], int]] = [
    ("CopyPaste", "copypaste", {}, 0),
    ("CopyPaste colour", "copypaste_color", {}, 0),
    ("Perlin, texture", "perlin", {"p_texture": 1.0}, 0),
    ("Perlin, texture", "perlin", {"p_texture": 1.0}, 1),
    ("Perlin, texture", "perlin", {"p_texture": 1.0}, 2),
    ("Perlin, own copy", "perlin", {"p_texture": 0.0}, 3),
    ("Perlin, own copy", "perlin", {"p_texture": 0.0}, 4),
    ("Mixture", "mixture", {}, 5),
    ("Mixture", "mixture", {}, 6),
]


def _grey(img: np.ndarray) -> np.ndarray:
    """uint8 (S, S, 3) -> its luma in three equal channels."""
    luma = (img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)
    return np.repeat(luma[:, :, None], 3, axis=2)


def synthetic_grid(images: list[tuple[str, np.ndarray]], seed: int = 0) -> plt.Figure:
    """One row per ROWS entry, two columns (augmented, mask) per (label, uint8 (S, S, 3)) image."""
    n_rows, n_cols = len(ROWS) + 1, 2 * len(images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols, 1.55 * n_rows), squeeze=False)
    for c, (label, img) in enumerate(images):
        x = image_to_tensor(img)[None]  # (1, 3, S, S)
        axes[0, 2 * c].imshow(img)
        axes[0, 2 * c].set_title(label, fontsize=8)
        axes[0, 2 * c + 1].axis("off")
        for r, (_, name, options, row_seed) in enumerate(ROWS, start=1):
            gen = torch.Generator().manual_seed(seed * 1000 + row_seed * 10 + c)
            aug = build_augmentation(name, **options).apply(x, gen)
            axes[r, 2 * c].imshow(tensor_to_image(aug.image)[0])
            axes[r, 2 * c + 1].imshow(aug.mask[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            if r == 1:
                axes[r, 2 * c + 1].set_title("mask", fontsize=8)
    for r, (title, *_rest) in enumerate(ROWS, start=1):
        axes[r, 0].set_ylabel(title, fontsize=8)
    axes[0, 0].set_ylabel("Original", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Synthetic anomalies and their exact masks (white = changed pixel)", fontsize=10)
    fig.tight_layout()
    return fig


def _demo_rows(size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rows = demo_rows(size, seed)
    return [*rows, ("weave, grey", _grey(rows[0][1]))]


def main(argv: list[str] | None = None) -> int:
    return figure_main(argv, __doc__.splitlines()[0], Path("docs/synthetic_anomalies.png"), 128, _demo_rows,
                       synthetic_grid)


if __name__ == "__main__":
    sys.exit(main())
