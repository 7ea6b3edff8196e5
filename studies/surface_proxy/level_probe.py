"""A probe, on validation images and faint synthetic defects only: do the maps locate defects better, over many
images pooled, when each map is taken relative to its own level?

Pixel AUROC pools every pixel of every image, so a map that runs high all over on one normal image outranks a
defect on another. Each candidate takes the model's map (its working resolution, then brought to the data's 256 px as
`scgan test` brings it) relative to a level of its own: `minus_mean` (less the map's mean), `minus_median` (less its
median), `over_median` (divided by its median). The image scores are not touched.

For each category, the `default` preset fitted on seed 0 (`--runs`, one folder per category, `<category>_seed0`)
scores the normal validation images and their faint copies (the proxy's five kinds, seeded as the proxy seeds them,
made at 256 px). Per kind, pixel AUROC over the faint copies' maps pooled with the normal validation images' maps
(as a test set pools its normal images), and, as the proxy measures it, over the faint copies alone. No test image
is read.

    python studies/surface_proxy/level_probe.py --runs runs/level_probe/default \
        --output studies/surface_proxy/probes/levels.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fusion_probe import (  # noqa: E402  (the proxy's faint copies, as the fusion probe makes them)
    faint_copies,
)
from probe_cli import categories_main  # noqa: E402

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for  # noqa: E402
from scgan.data.faint import FAINT_DEFECTS  # noqa: E402
from scgan.data.io import image_to_array, prepare_image, resize_map  # noqa: E402
from scgan.evaluation.metrics import pixel_auroc  # noqa: E402

LEVELS = {
    "raw": lambda m: m,
    "minus_mean": lambda m: m - m.mean(),
    "minus_median": lambda m: m - np.median(m),
    "over_median": lambda m: m / max(float(np.median(m)), 1e-12),
}


@torch.inference_mode()
def maps(loaded, images: list[np.ndarray]) -> list[np.ndarray]:
    """The model's raw anomaly maps of uint8 images, each at the image's own size."""
    scorer = loaded.scorer()
    out = []
    for img in images:
        x = torch.from_numpy(image_to_array(prepare_image(img, loaded.input_spec))[None])
        out.append(resize_map(scorer.run(x)[1][0].numpy(), img.shape[:2]))
    return out


def probe(path: Path) -> dict:
    loaded = load_model(path)
    val = dataset_for(loaded.config.data, "val", 256)
    clean = [val.images[i] for i in range(len(val))]
    normal = maps(loaded, clean)
    empty = [np.zeros(m.shape, bool) for m in normal]
    out: dict = {"model": str(path), "n_val": len(clean), "kinds": {}}
    for kind in FAINT_DEFECTS:
        images, masks = faint_copies(clean, kind)
        got = maps(loaded, images)
        keep = [i for i, m in enumerate(masks) if m.any()]
        row = {}
        for name, level in LEVELS.items():
            d = [level(got[i]) for i in keep]
            n = [level(m) for m in normal]
            row[name] = {"pooled": round(pixel_auroc(np.stack(d + n), np.stack([masks[i] for i in keep] + empty)), 4),
                         "copies": round(pixel_auroc(np.stack(d), np.stack([masks[i] for i in keep])), 4)}
        out["kinds"][kind] = row
        print(kind, json.dumps(row), flush=True)
    return out


if __name__ == "__main__":
    categories_main(probe, __doc__, [name for name in LEVELS if name != "raw"], "raw")
