"""A diagnostic of the shading probe on the real defects: it reads a test set to report, and chooses nothing.

For one of the level probe's seed-0 models: the pixel AUROC, all test images and per defect type (that type's images
with every normal test image, as `scgan test` reports it), of the model's map, the shading map alone and the two
fusions, made exactly as `shading_probe.py` makes them (the shading statistics from the same 300 training images, the
normalisation from the normal validation images), at the data's 256 px.

    python studies/surface_proxy/shading_on_test.py runs/level_probe/default/magnetic_tile_seed0/model.pt \
        --output studies/surface_proxy/probes/shading_on_test_magnetic_tile.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_cli import model_main  # noqa: E402
from shading_probe import (  # noqa: E402  (the probe's maps, made as it makes them)
    Normalise,
    feature_maps,
    prepared,
)

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for  # noqa: E402
from scgan.evaluation.metrics import pixel_auroc, pixel_auroc_by_defect  # noqa: E402


@torch.inference_mode()
def diagnose(path: Path) -> dict:
    loaded = load_model(path)
    shading, clean, _ = prepared(loaded)
    norm = {"model": Normalise(feature_maps(loaded, clean)), "shading": Normalise([shading.map(im) for im in clean])}
    test = dataset_for(loaded.config.data, "test", 256)
    images = [test.images[i] for i in range(len(test))]
    masks = np.stack([np.asarray(test.masks[i]).reshape(images[i].shape[:2]) > 0 for i in range(len(test))])
    labels = np.array([s.label for s in test.samples])
    defects = [s.defect for s in test.samples]
    f = np.stack(feature_maps(loaded, images))
    s = np.stack([shading.map(im) for im in images])
    nf, ns = norm["model"](f), norm["shading"](s)
    out = {"file": str(path), "images": len(images)}
    for name, maps in {"model": f, "shading": s, "max": np.maximum(nf, ns), "mean": (nf + ns) / 2}.items():
        by = pixel_auroc_by_defect(maps, masks, labels, defects)
        out[name] = {"all": round(100 * pixel_auroc(maps, masks), 2),
                     **{d: round(100 * v["pixel_auroc"], 2) for d, v in by.items()}}
        print(name, json.dumps(out[name]), flush=True)
    return out


if __name__ == "__main__":
    model_main(diagnose, __doc__)
