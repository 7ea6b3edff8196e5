"""Where the maps of normal validation images peak: the share of them whose maximum lies within 5% (of the short
side) of the image border, for each model file given. Validation images only.

    python studies/surface_proxy/border_peaks.py runs/surface_proxy/s01_default/magnetic_tile_seed0/train/model.pt \
        runs/surface_proxy/m02_pad32/magnetic_tile_seed0/train/model.pt
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import dataset_for, eval_loader


@torch.inference_mode()
def border_distances(path: str) -> np.ndarray:
    """Each normal validation image's map peak: its distance to the nearest border, in shares of the short side."""
    loaded = load_model(path)
    scorer = loaded.scorer()
    out = []
    for batch in eval_loader(dataset_for(loaded.config.data, "val", loaded.input_spec), 8):
        for m in scorer.run(batch["image"])[1].numpy():
            h, w = m.shape
            y, x = np.unravel_index(m.argmax(), m.shape)
            out.append(min(y, x, h - 1 - y, w - 1 - x) / min(h, w))
    return np.array(out)


def main() -> None:
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        d = border_distances(path)
        print(f"{path}: {int((d < 0.05).sum())} of {len(d)} normal validation maps peak within 5% of the border")


if __name__ == "__main__":
    main()
