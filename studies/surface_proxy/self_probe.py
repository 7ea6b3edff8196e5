"""A probe, on validation images and faint synthetic defects only: does a map of how far each patch lies from its
own image's typical patch, judged location by location against the normal images', add what the nearest normal
patch misses: a region of another texture beside the rest of one image?

The self map: each patch's features in the bank's space (whitened, as the model's distances measure them), less the
image's own median patch (per dimension), their length; smoothed and brought to the working size as the model's map
is (its Gaussian), then judged per location against 300 training images' (mean and spread on a 64 x 64 grid of
normalised coordinates, the spread floored at a tenth of its median, as map_z): (s - mean) / spread. It is fused
with the model's map as `shading_probe.py` fuses its shading map (each normalised by its normal validation pixels;
`max` or `mean`), and measured as it measures. The image scores are not touched. No test image is read.

    python studies/surface_proxy/self_probe.py --output studies/surface_proxy/probes/self.json
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shading_probe import GRID, main  # noqa: E402  (the shading probe's measurement, with another second map)

from scgan.data.io import image_to_array, prepare_image, resize_map  # noqa: E402
from scgan.models.patchcore.model import distance_maps, embed  # noqa: E402


class SelfDeviation:
    """The normal images' self maps per location, and an image's self map judged against them."""

    def __init__(self, loaded, images: list[np.ndarray]) -> None:
        self.spec, self.scorer = loaded.input_spec, loaded.scorer()
        g = torch.cat([F.interpolate(self.work(img), size=(GRID, GRID), mode="area") for img in images])
        self.mu, sd = g.mean(0, keepdim=True), g.std(0, keepdim=True)
        self.sd = sd.clamp_min(0.1 * sd.median())

    @torch.inference_mode()
    def work(self, img: np.ndarray) -> torch.Tensor:
        """(1, 1, H, W) at the working size: each patch's distance to the image's median patch, smoothed."""
        x = torch.from_numpy(image_to_array(prepare_image(img, self.spec))[None])
        f = embed(self.scorer.backbone, x, self.scorer.layout).float()
        _, d, h, w = f.shape
        q = self.scorer.memory.project(f.permute(0, 2, 3, 1).reshape(h * w, d))
        dev = (q - q.median(0).values).norm(dim=1).reshape(1, 1, h, w)
        return distance_maps(dev, x.shape[-2:], self.scorer.blur)[1]

    def map(self, img: np.ndarray) -> np.ndarray:
        s = self.work(img)
        mu = F.interpolate(self.mu, size=s.shape[-2:], mode="bilinear", align_corners=False)
        sd = F.interpolate(self.sd, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return resize_map(((s - mu) / sd)[0, 0].numpy(), img.shape[:2])


if __name__ == "__main__":
    main(SelfDeviation, "self", __doc__)
