"""How far a mirrored image's features, put back in the image's places (`patchcore.flips`), lie from where the
unmirrored image's features answer the same content, in pixels, per backbone block.

A 16 x 16 patch of noise on a blank 128 x 192 image; for each input shift t (pixels, along the mirrored axis), the
map of how strongly a block's features answer the patch shifted by t, unmirrored, is correlated with the map of the
unshifted patch seen mirrored and put back; the t of the highest correlation, over four patches, is the offset.
Convolutions padded as TensorFlow pads (one more pixel right and bottom) would put a mirrored view s - 1 px off at
stride s if their kernels were symmetric; the learned kernels are not, and at the deeper blocks they pull it most of
the way back. This measures what the blocks do.

    python studies/surface_proxy/flip_alignment.py > studies/surface_proxy/flip_alignment.txt
"""
from __future__ import annotations

import torch

from scgan.models.patchcore.backbone import block_plan, load_backbone
from scgan.models.patchcore.model import FeatureLayout, embed
from scgan.training.patchcore import patch_features

BLOCKS = (0, 3, 6, 14)
H, W, PAD, SIDE = 128, 192, 32, 16


def answer(backbone, layout, image: torch.Tensor, blank: torch.Tensor, flip: tuple[int, ...]) -> torch.Tensor:
    h, w = embed(backbone, blank, layout).shape[-2:]
    got = patch_features(backbone, layout, image, flip) - patch_features(backbone, layout, blank, flip)
    return got.norm(dim=1).reshape(h, w)


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    print("block  stride  mirrored  offset px (correlation at it)")
    for block in BLOCKS:
        backbone = load_backbone("lite1", block)
        layout = FeatureLayout(layers=(block,), neighbourhood=1, pad=PAD)
        blank = torch.zeros(1, 3, H, W)
        for flip, axis in (((3,), "left-right"), ((2,), "up-down")):
            g = torch.Generator().manual_seed(0)
            total: dict[int, float] = {}
            for _ in range(4):
                y, x = (int(v) for v in torch.randint(48, 72, (2,), generator=g))
                patch = torch.rand(1, 3, SIDE, SIDE, generator=g) * 2 - 1
                seen = blank.clone()
                seen[..., y:y + SIDE, x:x + SIDE] = patch
                mirrored = answer(backbone, layout, seen, blank, flip)
                for t in range(-12, 13):
                    moved = blank.clone()
                    dy, dx = (t, 0) if flip == (2,) else (0, t)
                    moved[..., y + dy:y + dy + SIDE, x + dx:x + dx + SIDE] = patch
                    a, b = answer(backbone, layout, moved, blank, ()), mirrored
                    a, b = a - a.mean(), b - b.mean()
                    total[t] = total.get(t, 0.0) + float((a * b).sum() / (a.norm() * b.norm())) / 4
            best = max(total, key=total.get)
            print(f"{block:5d}  {block_plan('lite1')[block].stride:6d}  {axis:9s} {best:+3d} ({total[best]:.3f})",
                  flush=True)


if __name__ == "__main__":
    main()
