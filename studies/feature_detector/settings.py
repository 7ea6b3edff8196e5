"""Choosing the feature detector's settings on validation images with synthetic defects (never a test image).

For each candidate (key=value settings on the default preset) and category: fit on the training split (CPU time
and peak memory measured), then score the validation split's normal images and the same images with synthetic
defects of five kinds (confetti blended at strength 1, 0.5 and 0.25, as `auto` uses them; DRAEM's Perlin regions;
CopyPaste squares). For each kind: the image AUROC of the model's own default score (normal vs defective copies) and
the pixel AUROC of its maps on the defective copies. The criterion (README.md) is their mean.

    python studies/feature_detector/settings.py --name base --categories bottle,metal_nut,magnetic_tile
    python studies/feature_detector/settings.py --name layers_4_7 patchcore.layers=4,7
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scgan.artifacts.model_file import load_model
from scgan.config import load_config
from scgan.data.augment import build_augmentation
from scgan.data.datasets import dataset_for, eval_loader
from scgan.evaluation.metrics import image_auroc, pixel_auroc
from scgan.models.checks import check_config
from scgan.training.fit import train
from scgan.utils.seed import seeded_generator

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CATEGORIES = {"bottle": ("mvtec", DATA / "mvtec_ad"), "metal_nut": ("mvtec", DATA / "mvtec_ad"),
              "magnetic_tile": ("folder", DATA / "magnetic_tile")}
# name -> (augmentation, patches, strength); patches of 1% of the image area, as the `auto` rule's confetti.
KINDS = {"confetti_1": ("confetti", 3, 1.0), "confetti_0.5": ("confetti", 3, 0.5),
         "confetti_0.25": ("confetti", 3, 0.25), "perlin": ("perlin", 0, 1.0), "copypaste": ("copypaste", 3, 1.0)}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def defects(x: torch.Tensor, kind: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x with synthetic defects of ``kind`` and their masks (B, H, W), seeded by the batch index."""
    name, n, strength = KINDS[kind]
    grey = x.shape[1] == 1
    x3 = x.expand(-1, 3, -1, -1) if grey else x  # the synthetic sources paint colour; a grey model sees their luma
    aug = build_augmentation(name, max(n, 1), 0.01).apply(x3, generator=seeded_generator(x.device, 7, batch))
    out = x3 + strength * (aug.image - x3)
    if grey:
        out = (0.299 * out[:, :1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
    return out, aug.mask[:, 0]


def separation(normal: np.ndarray, synthetic: np.ndarray, maps: np.ndarray, masks: np.ndarray) -> dict:
    """Image AUROC of the normal scores against the defective copies' and pixel AUROC of the copies' maps (a copy
    whose defect changed no pixel has nothing to find)."""
    labels = np.r_[np.zeros(len(normal)), np.ones(len(synthetic))]
    keep = masks.reshape(len(masks), -1).any(1)
    return {"image_auroc": image_auroc(np.r_[normal, synthetic], labels),
            "pixel_auroc": pixel_auroc(maps[keep], masks[keep])}


def category_config(category: str, seed: int, overrides: list[str]):
    """The default preset with ``overrides`` on one shared category, checked."""
    dataset, root = CATEGORIES[category]
    return check_config(load_config("default", overrides=[*overrides, f"data.dataset={dataset}", f"data.root={root}",
                                                          f"data.category={category}", f"seed={seed}"]))


def study_arguments(description: str, output: str, work: str) -> argparse.ArgumentParser:
    """The command line of a settings study: a name, categories, seed, threads, where results and runs go."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--name", required=True)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", default=output)
    ap.add_argument("--work", default=work)
    ap.add_argument("overrides", nargs="*")
    return ap


def pending_runs(args: argparse.Namespace):
    """(category, result file, config, work folder) of each category of ``args`` whose result is not stored yet;
    sets torch's thread count."""
    torch.set_num_threads(args.threads)
    for cat in args.categories.split(","):
        dest = Path(args.output) / args.name / f"{cat}_seed{args.seed}.json"
        if dest.exists():
            print(f"done: {dest}")
            continue
        yield cat, dest, category_config(cat, args.seed, args.overrides), Path(args.work) / args.name / dest.stem


@torch.inference_mode()
def validate(model_path: Path) -> dict:
    loaded = load_model(model_path)
    cfg, scorer, name = loaded.config, loaded.scorer(), loaded.default_score
    col = scorer.names.index(name)
    val = dataset_for(cfg.data, "val", loaded.input_spec)
    normal, synthetic, pixels = [], {k: [] for k in KINDS}, {k: ([], []) for k in KINDS}
    scoring_cpu = 0.0
    for i, b in enumerate(eval_loader(val, 8)):
        x = b["image"]
        c0 = cpu_seconds()
        s, _ = scorer.run(x)
        scoring_cpu += cpu_seconds() - c0
        normal.append(s[:, col].numpy())
        for kind in KINDS:
            xd, mask = defects(x, kind, i)
            s, m = scorer.run(xd)
            synthetic[kind].append(s[:, col].numpy())
            pixels[kind][0].append(m.numpy())
            pixels[kind][1].append(mask.numpy())
    normal = np.concatenate(normal)
    out = {"score": name, "n_val": len(val), "scoring_cpu_ms_per_image": 1000 * scoring_cpu / len(val), "kinds": {}}
    for kind in KINDS:
        out["kinds"][kind] = separation(normal, np.concatenate(synthetic[kind]), np.concatenate(pixels[kind][0]),
                                        np.concatenate(pixels[kind][1]))
    out["criterion"] = float(np.mean([(v["image_auroc"] + v["pixel_auroc"]) / 2 for v in out["kinds"].values()]))
    return out


def main() -> None:
    args = study_arguments(__doc__.splitlines()[0], "studies/feature_detector/results",
                           "runs/feature_selection").parse_args()
    for cat, dest, cfg, work in pending_runs(args):
        c0, t0 = cpu_seconds(), time.perf_counter()
        res = train(cfg, work, overwrite=True, progress=False)
        fit = {"cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - t0,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "summary": json.loads((work / "train_summary.json").read_text())}
        result = {"name": args.name, "category": cat, "seed": args.seed, "overrides": args.overrides,
                  "threads": args.threads, "fit": fit, "validation": validate(res.model_path),
                  "command": " ".join(sys.argv)}
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(result, indent=2))
        v = result["validation"]
        print(f"{args.name} {cat}: criterion {v['criterion']:.4f} ({v['score']}), fit {fit['cpu_s']:.0f} CPU s, "
              f"peak {fit['peak_rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
