"""What `patchcore.flips=auto` measures on the shared data's training images: the share of the default features'
variance that where a patch lies explains (`scgan.training.patchcore.surface_share`, 16 images drawn by seed 0);
below 0.5 a surface, at or above it an object. Normal training images only.

    python studies/surface_proxy/surface_share.py > studies/surface_proxy/surface_share.txt
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scgan.config import load_config
from scgan.data.datasets import stream_for
from scgan.models.patchcore.backbone import load_backbone
from scgan.models.patchcore.kind import PATCHCORE, layout
from scgan.training.patchcore import SURFACE_SHARE, surface_share

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SETS = (("mvtec", DATA / "mvtec_ad", "bottle"), ("mvtec", DATA / "mvtec_ad", "metal_nut"),
        ("folder", DATA / "magnetic_tile", ""), ("folder", DATA / "magnetic_tile_native", ""))


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    print("data                  share  images  decision")
    for dataset, root, category in SETS:
        cfg = load_config("default", overrides={"data.dataset": dataset, "data.root": str(root),
                                                "data.category": category})
        stream = stream_for(cfg.data, "train", dataclasses.replace(PATCHCORE.input_spec(cfg), channels=3))
        got = surface_share(load_backbone(cfg.patchcore.backbone, max(cfg.patchcore.layers)), layout(cfg), stream,
                            cfg.seed)
        name = category or root.name
        print(f"{name:20s}  {got.share:.3f}  {got.images:6d}  {'surface' if got.share < SURFACE_SHARE else 'object'}")


if __name__ == "__main__":
    main()
