"""Where a map stands inside the real `Uneven` regions of magnetic tiles: a diagnostic that reads the test set to
report a limit, and chooses nothing.

For one model file: every `Uneven` test image with a marked region, scored as `scgan test` scores it (the image read
at the model's input), the map and the mask at the model's working size (320 px here). Per image, the map's mean
inside the region (more than 12 px from its edge), on its rim (the 12 px inside the edge) and outside it, and the
share of the region's pixels above the 0.99 quantile of the normal test images' pixels; printed as means over the
images, for the map the model returns and for map_z's own map (the map judged location by location,
`patchcore.position_map`).

    python studies/surface_proxy/uneven_bands.py runs/level_probe/default/magnetic_tile_seed0/model.pt \
        --output studies/surface_proxy/probes/uneven_bands.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_cli import model_main  # noqa: E402

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for  # noqa: E402
from scgan.data.io import image_to_array, resize_map  # noqa: E402

RIM = 12


@torch.inference_mode()
def diagnose(path: Path) -> dict:
    loaded = load_model(path)
    scorer = loaded.scorer()
    test = dataset_for(loaded.config.data, "test", loaded.input_spec)

    def maps(i: int) -> dict[str, np.ndarray]:
        x = torch.from_numpy(image_to_array(test.images[i])[None])
        size = test.masks[i].shape
        scorer.position_map = False
        plain = resize_map(scorer.run(x)[1][0].numpy(), size)
        scorer.position_map = True
        z = resize_map(scorer.run(x)[1][0].numpy(), size)
        return {"map": plain, "map_z_map": z}

    normal = [maps(i) for i, s in enumerate(test.samples) if s.label == 0]
    q99 = {k: float(np.quantile(np.concatenate([m[k].ravel() for m in normal]), 0.99)) for k in normal[0]}
    rows = {k: [] for k in q99}
    for i, s in enumerate(test.samples):
        mask = np.asarray(test.masks[i], bool)
        if s.defect != "Uneven" or not mask.any():
            continue
        inner = ndimage.binary_erosion(mask, iterations=RIM)
        rim = mask & ~inner
        for k, m in maps(i).items():
            rows[k].append([m[inner].mean() if inner.any() else np.nan, m[rim].mean(), m[~mask].mean(),
                            (m[mask] > q99[k]).mean(), (m[~mask] > q99[k]).mean()])
    out = {"model": str(path), "images": len(rows["map"]), "rim_px": RIM}
    for k, r in rows.items():
        a = np.nanmean(np.asarray(r, float), axis=0)
        out[k] = {"inside": round(a[0], 3), "rim": round(a[1], 3), "outside": round(a[2], 3),
                  "normal_q99": round(q99[k], 3), "region_above_q99": round(a[3], 3),
                  "outside_above_q99": round(a[4], 3)}
        print(k, json.dumps(out[k]), flush=True)
    return out


if __name__ == "__main__":
    model_main(diagnose, __doc__)
