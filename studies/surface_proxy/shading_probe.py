"""A probe, on validation images and faint synthetic defects only: does a map of each image's own shading, judged
location by location against the normal images', locate large faint regions that the features miss, without losing
the thin ones?

The features answer each patch by its nearest normal patch, and some normal image holds a patch as dark as any
region of an unevenly lit tile: a region that is darker than the rest of its own image is a relation within the image,
which a patch's distance to the bank does not see. The shading map: the image in grey at the working resolution,
averaged over 8 x 8 px cells and smoothed (sigma 1.25 cells), less its own median (the image's level), then judged
per location against the training images' (their mean and spread on a 64 x 64 grid of normalised coordinates, the
spread floored at a tenth of its median, as map_z): |r - mean| / spread, brought to the image's size.

Each map (the model's and the shading map) is normalised by its normal validation pixels (less their median, over
their 0.99 quantile less the median), and the two are fused: `max` (the larger) or `mean`. The image scores are not
touched. Per (category, kind), the pixel AUROC of the faint copies' maps pooled with the normal validation images'
maps (deciding), and of the copies alone (recorded), for the model's map, the shading map alone and each fusion. The
default's seed-0 models (`--runs`, `<category>_seed0`). No test image is read.

    python studies/surface_proxy/shading_probe.py --output studies/surface_proxy/probes/shading.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fusion_probe import (  # noqa: E402  (the proxy's faint copies, as the fusion probe makes them)
    faint_copies,
)
from level_probe import maps as feature_maps  # noqa: E402  (the model's raw maps at each image's size)
from probe_cli import categories_main  # noqa: E402

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for  # noqa: E402
from scgan.data.faint import FAINT_DEFECTS  # noqa: E402
from scgan.data.io import image_to_array, prepare_image, resize_map  # noqa: E402
from scgan.evaluation.metrics import pixel_auroc  # noqa: E402
from scgan.models.scoring import GaussianBlur  # noqa: E402

CELL, SIGMA, GRID, TRAIN = 8, 1.25, 64, 300
BLUR = GaussianBlur(SIGMA)


def relative_shading(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) in [-1, 1] -> (1, 1, H / CELL, W / CELL): the smoothed grey level less the image's median."""
    low = BLUR(F.avg_pool2d(x.mean(1, keepdim=True), CELL))
    return low - low.flatten().median()


class Shading:
    """The normal images' relative shading per location, and the shading map of an image judged against it."""

    def __init__(self, loaded, images: list[np.ndarray]) -> None:
        self.spec = loaded.input_spec
        g = torch.cat([F.interpolate(relative_shading(self.input(img)), size=(GRID, GRID), mode="area")
                       for img in images])
        self.mu, sd = g.mean(0, keepdim=True), g.std(0, keepdim=True)
        self.sd = sd.clamp_min(0.1 * sd.median())

    def input(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image_to_array(prepare_image(img, self.spec))[None])

    def map(self, img: np.ndarray) -> np.ndarray:
        r = relative_shading(self.input(img))
        mu = F.interpolate(self.mu, size=r.shape[-2:], mode="bilinear", align_corners=False)
        sd = F.interpolate(self.sd, size=r.shape[-2:], mode="bilinear", align_corners=False)
        return resize_map(((r - mu).abs() / sd)[0, 0].numpy(), img.shape[:2])


class Normalise:
    """A map less its normal pixels' median, over their 0.99 quantile less that median."""

    def __init__(self, normal: list[np.ndarray]) -> None:
        px = np.concatenate([m.ravel() for m in normal])
        self.med = float(np.median(px))
        self.span = max(float(np.quantile(px, 0.99)) - self.med, 1e-12)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        return (m - self.med) / self.span


@torch.inference_mode()
def prepared(loaded, second=Shading) -> tuple:
    """``second(loaded, up to TRAIN training images drawn by seed 0)`` and the validation images, at 256 px."""
    train = dataset_for(loaded.config.data, "train", 256)
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:TRAIN].tolist()
    val = dataset_for(loaded.config.data, "val", 256)
    return second(loaded, [train.images[i] for i in picked]), [val.images[i] for i in range(len(val))], len(picked)


@torch.inference_mode()
def probe(path: Path, second=Shading, name: str = "shading") -> dict:
    """The model's map, a ``second`` map (made as ``second(loaded, training images)``, then ``.map(image)``) and
    their two fusions, on the validation images and the faint copies."""
    loaded = load_model(path)
    other, clean, picked = prepared(loaded, second)
    normal = {"model": feature_maps(loaded, clean), name: [other.map(im) for im in clean]}
    norm = {k: Normalise(v) for k, v in normal.items()}

    def variants(f: list[np.ndarray], s: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        nf, ns = [norm["model"](m) for m in f], [norm[name](m) for m in s]
        return {"model": f, name: s, "max": [np.maximum(a, b) for a, b in zip(nf, ns)],
                "mean": [(a + b) / 2 for a, b in zip(nf, ns)]}

    base = variants(normal["model"], normal[name])
    empty = [np.zeros(m.shape, bool) for m in normal["model"]]
    out: dict = {"model": str(path), "n_val": len(clean), f"n_train_{name}": picked, "kinds": {}}
    for kind in FAINT_DEFECTS:
        images, masks = faint_copies(clean, kind)
        keep = [i for i, m in enumerate(masks) if m.any()]
        got = variants(feature_maps(loaded, images), [other.map(im) for im in images])
        row = {}
        for variant, maps in got.items():
            d = [maps[i] for i in keep]
            row[variant] = {"pooled": round(pixel_auroc(np.stack(d + base[variant]),
                                                     np.stack([masks[i] for i in keep] + empty)), 4),
                            "copies": round(pixel_auroc(np.stack(d), np.stack([masks[i] for i in keep])), 4)}
        out["kinds"][kind] = row
        print(kind, json.dumps(row), flush=True)
    return out


def main(second=Shading, name: str = "shading", description: str = __doc__) -> None:
    """This probe with ``second`` as the map beside the model's (named ``name`` in its results)."""
    categories_main(lambda path: probe(path, second, name), description, ["max", "mean"], "model")


if __name__ == "__main__":
    main()
