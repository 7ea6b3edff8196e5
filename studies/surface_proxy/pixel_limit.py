"""Where the pixel AUROC of a fitted model is lost: per defect type, and across images against within them.

Reads a test set to report a limit, never to choose a setting. For one model file it scores the test split (as
``scgan test`` does) and prints, as JSON:

- the pixel AUROC of all test images (what ``scgan test`` reports), and per defect type (that type's images and every
  normal test image) with the type's share of the anomalous pixels (both as ``scgan test`` reports them), the mean of
  its images' own pixel AUROC, and the pixel AUROC of all test images but that type's (maps of one size);
- the pixel AUROC within defective images only (normal pixels of the same images), and the mean over defective images
  of each image's own pixel AUROC: how well the map locates a defect inside its image, whatever its level there;
- the same after subtracting each image's median map value: what a shift of whole maps between images costs.

    python studies/surface_proxy/pixel_limit.py results/position_grid/z64/magnetic_tile_seed0/train/model.pt \
        --output studies/surface_proxy/pixel_limit/magnetic_tile_seed0.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from scgan.evaluation.metrics import pixel_auroc, pixel_auroc_by_defect
from scgan.inference.evaluate import run_test


def _auroc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    return round(100 * pixel_auroc(np.stack(maps), np.stack(masks)), 2)


def limits(maps: list[np.ndarray], masks: list[np.ndarray], defects: list[str], labels: np.ndarray) -> dict:
    bad = [i for i in range(len(maps)) if labels[i] == 1 and masks[i].any()]
    same_size = len({m.shape for m in maps}) == 1
    types = pixel_auroc_by_defect(np.stack(maps), np.stack(masks), labels, defects) if same_size else {}
    out = {"all": _auroc(maps, masks), "types": {}}
    for d, v in types.items():
        idx = [i for i in bad if defects[i] == d]
        rest = [i for i in range(len(maps)) if defects[i] != d]
        out["types"][d] = {"images": v["images"], "pixel_share": round(v["pixel_share"], 3),
                           "pixel_auroc": round(100 * v["pixel_auroc"], 2),
                           "within_mean": round(float(np.mean([_auroc([maps[i]], [masks[i]]) for i in idx])), 2),
                           "all_without_it": _auroc([maps[i] for i in rest], [masks[i] for i in rest])}
    out["defective_only"] = _auroc([maps[i] for i in bad], [masks[i] for i in bad])
    out["within_image_mean"] = round(float(np.mean([_auroc([maps[i]], [masks[i]]) for i in bad])), 2)
    centred = [m - np.median(m) for m in maps]
    out["all_median_centred"] = _auroc(centred, masks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_test(args.model, tmp, report=False, progress=False).result
    masks = [np.asarray(m, bool) for m in result.masks]
    maps = [np.asarray(m, np.float32) for m in result.maps]
    if any(a.shape != b.shape for a, b in zip(maps, masks)):
        raise SystemExit("maps and masks differ in size")
    out = {"model": args.model, **limits(maps, masks, result.defects, result.labels)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
