"""Where the pixel AUROC of a fitted model is lost: per defect type, and across images against within them.

Reads a test set to report a limit, never to choose a setting. For one model file it scores the test split as
``scgan test`` does and, on the same pixels (the maps brought to the stored masks' size), prints as JSON:

- the pixel AUROC of all test images, and per defect type (that type's images and every normal test image) with the
  type's share of the anomalous pixels, both as ``scgan test`` reports them (``pixel_auroc_by_defect``);
- per type, the mean of its images' own pixel AUROC (how well the map locates a defect inside its image, whatever its
  level there) and the pixel AUROC of all test images but that type's;
- the pixel AUROC within defective images only, the mean of every defective image's own, and the pixel AUROC after
  subtracting each image's median map value.

    python studies/surface_proxy/pixel_limit.py results/position_grid/z64/magnetic_tile_seed0/train/model.pt \
        --output studies/surface_proxy/pixel_limit/magnetic_tile_seed0.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import build_dataset
from scgan.evaluation.metrics import pixel_auroc
from scgan.inference.evaluate import run_test
from scgan.inference.summary import maps_at


def _auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    return round(100 * pixel_auroc(maps, masks), 2)


def limits(maps: np.ndarray, masks: np.ndarray, defects: list[str], labels: np.ndarray, metrics: dict) -> dict:
    """(N, H, W) maps and stored masks; ``metrics``: what ``scgan test`` computed from the same."""
    assert abs(_auroc(maps, masks) - 100 * metrics["pixel_auroc"]) < 0.01, "not the pixels scgan test judged"
    bad = [i for i in range(len(maps)) if labels[i] == 1 and masks[i].any()]

    def own(rows: list[int]) -> float:  # the mean of each image's own pixel AUROC
        return round(float(np.mean([_auroc(maps[i:i + 1], masks[i:i + 1]) for i in rows])), 2)

    out = {"all": round(100 * metrics["pixel_auroc"], 2), "types": {}}
    for d, v in metrics["pixel_auroc_by_defect"].items():
        idx = [i for i in bad if defects[i] == d]
        rest = [i for i in range(len(maps)) if defects[i] != d]
        out["types"][d] = {"images": v["images"], "pixel_share": round(v["pixel_share"], 3),
                           "pixel_auroc": round(100 * v["pixel_auroc"], 2),
                           "within_mean": own(idx),
                           "all_without_it": _auroc(maps[rest], masks[rest])}
    out["defective_only"] = _auroc(maps[bad], masks[bad])
    out["within_image_mean"] = own(bad)
    out["all_median_centred"] = _auroc(maps - np.median(maps.reshape(len(maps), -1), axis=1)[:, None, None], masks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    loaded = load_model(args.model)
    d = loaded.config.data
    with tempfile.TemporaryDirectory() as tmp:
        tested = run_test(loaded, tmp, report=False, progress=False)
    masks = build_dataset(d.dataset, d.root, d.category, split="test", spec=loaded.input_spec,
                          skip_bad_images=d.skip_bad_images, require_masks=d.require_masks).stored_masks()
    maps = maps_at(tested.result.maps, masks.shape[1:])
    result = tested.result
    out = {"model": args.model, "pixels": list(masks.shape[1:]),
           **limits(maps, masks, result.defects, result.labels, tested.metrics)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
