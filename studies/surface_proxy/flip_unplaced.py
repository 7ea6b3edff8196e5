"""The proxy (proxy.py, same arguments) with mirrored training images' features left where the mirrored image has
them, not put back in the image's own places: each feature then pairs its blocks exactly as an unmirrored image's
does, and where it lies is lost (which only map_z and the cross-fit's maps use). A diagnostic of stage 12, run without
map_z; never a setting of the product.

    python studies/surface_proxy/flip_unplaced.py --name o03_nogrid_flips_unplaced --categories magnetic_tile \\
        --threads 1 patchcore.position_grid=0 score.default_score=map_max score.threshold_source=validation \\
        patchcore.flips=auto
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import scgan.training.patchcore as fitting

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy  # noqa: E402

placed = fitting.patch_features


def unplaced(backbone, layout, x: torch.Tensor, flip: tuple[int, ...] = ()) -> torch.Tensor:
    """The features of ``x`` mirrored by ``flip``, in the mirrored image's own places."""
    return placed(backbone, layout, x.flip(flip) if flip else x)


if __name__ == "__main__":
    fitting.patch_features = unplaced  # what stream_bank calls for each training image
    proxy.main()
