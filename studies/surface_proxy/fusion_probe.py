"""A probe of fusing two fitted models' maps and scores on the faint defects, before building the fusion.

Validation images and the proxy's five faint kinds only; no test image is read. For each category, two models fitted
on the same training split (seed 0; `--pair`, their run folders: by default the `default` preset's and the `scgan`
preset's) score the same normal validation images and the same faint copies of them, made once at the data's 256 px
(the proxy's kinds, seeded by (kind, batch) as the proxy seeds them) and brought to each model's input as a file would
be. As in studies/feature_detector/fusion.py, each model's default score is normalised by its calibration and each map
by its heat-map scale, and the fusion is their mean. Printed per kind: image AUROC and pixel AUROC of each and of the
fusion, keyed by the run folders' names (the first probe's file, `probes/fusion.json`, made before `--pair`, calls the
`default` preset's model "features").

    python studies/surface_proxy/fusion_probe.py --runs runs/fusion_probe \
        --output studies/surface_proxy/probes/fusion.json
    python studies/surface_proxy/fusion_probe.py --runs runs/fusion_probe --pair default,r160 \
        --output studies/surface_proxy/probes/resolutions.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "feature_detector"))
from fusion import score  # noqa: E402  (the first fusion study's: normalised scores, heat maps at 256 px)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy import _faint  # noqa: E402  (the proxy's faint defects, seeded as it seeds them)

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for  # noqa: E402
from scgan.data.faint import FAINT_DEFECTS  # noqa: E402
from scgan.data.io import image_to_array, tensor_to_image  # noqa: E402
from scgan.evaluation.metrics import image_auroc, pixel_auroc  # noqa: E402

CATEGORIES = ("bottle", "metal_nut", "magnetic_tile")
BATCH = 8


def faint_copies(clean: list[np.ndarray], kind: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images with one faint defect of ``kind`` each, and its masks, batch by batch as the proxy seeds them."""
    images, masks = [], []
    for b in range(0, len(clean), BATCH):
        x = torch.from_numpy(np.stack([image_to_array(im) for im in clean[b:b + BATCH]]))
        image, mask = _faint(x, kind, b // BATCH)
        images += [tensor_to_image(t) for t in image]
        masks += list(mask.numpy() > 0.5)
    return images, masks


def measure(normal: np.ndarray, defective: np.ndarray, maps: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    keep = [i for i, m in enumerate(masks) if m.any()]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(defective))]
    return {"image_auroc": round(image_auroc(np.r_[normal, defective], labels), 4),
            "pixel_auroc": round(pixel_auroc(np.stack([maps[i] for i in keep]), np.stack([masks[i] for i in keep])), 4)}


@torch.inference_mode()
def probe(paths: dict[str, Path]) -> dict:
    """``paths``: two models' files by name."""
    models = {name: load_model(path) for name, path in paths.items()}
    (a, first), (b, second) = models.items()
    val = dataset_for(first.config.data, "val", 256)
    other = dataset_for(second.config.data, "val", 64)
    if [s.path for s in val.samples] != [s.path for s in other.samples]:
        raise SystemExit("the two models hold out different validation images")
    clean = [val.images[i] for i in range(len(val))]
    normal = {name: score(loaded, clean) for name, loaded in models.items()}
    out: dict = {"n_val": len(clean), "kinds": {}}
    for kind in FAINT_DEFECTS:
        images, masks = faint_copies(clean, kind)
        got = {name: score(loaded, images) for name, loaded in models.items()}
        f, g = got[a], got[b]
        fused_normal = (normal[a][0] + normal[b][0]) / 2
        out["kinds"][kind] = {
            a: measure(normal[a][0], f[0], f[1], masks),
            b: measure(normal[b][0], g[0], g[1], masks),
            "fusion": measure(fused_normal, (f[0] + g[0]) / 2, [(x + y) / 2 for x, y in zip(f[1], g[1])], masks)}
        print(kind, json.dumps(out["kinds"][kind]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/fusion_probe"))
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--pair", default="default,scgan", help="the two run folders under --runs, comma-separated")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    pair = args.pair.split(",")
    if len(pair) != 2 or len(set(pair)) != 2 or "fusion" in pair:
        ap.error(f"--pair takes two different run folders other than 'fusion', got {args.pair!r}")
    torch.set_num_threads(1)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    for cat in args.categories.split(","):
        print(cat, flush=True)
        results[cat] = probe({p: args.runs / p / f"{cat}_seed0" / "model.pt" for p in pair})
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
