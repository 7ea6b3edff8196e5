"""A validation proxy for faint, thin and textural defects, and how it ranks settings against the real defects.

For each setting (key=value over the default preset) and category: fit on the training split (CPU time, peak
memory), score the validation split's normal images and the same images with synthetic defects, both the faint
kinds (``scgan.data.faint``: crack, spot, uneven, blend, warp) and the five sharp kinds the first search used
(studies/feature_detector/settings.py), then test on the category's test split as ``scgan test`` does. The test
numbers are stored beside the proxy's only to judge the proxy (README.md); nothing here chooses a setting.

    python studies/surface_proxy/proxy.py --name s01_default --categories bottle,metal_nut,magnetic_tile
    python studies/surface_proxy/proxy.py --name s02_n3 patchcore.neighbourhood=3
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "feature_detector"))
from settings import KINDS as SHARP  # noqa: E402
from settings import cpu_seconds, pending_runs, separation, study_arguments  # noqa: E402  (the first search's)
from settings import defects as sharp_defects  # noqa: E402

from scgan.artifacts.model_file import load_model  # noqa: E402
from scgan.data.datasets import dataset_for, eval_loader  # noqa: E402
from scgan.data.faint import FAINT_DEFECTS, faint_defect  # noqa: E402
from scgan.inference.evaluate import run_test  # noqa: E402
from scgan.training.fit import train  # noqa: E402
from scgan.utils.seed import seeded_generator  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Another draw of the faint defects (the same kinds and ranges, other seeds): PROXY_DEFECT_SEED=1, 2, ...; 0 = the
# draw every stage up to 10 ranked on.
DEFECT_SEED = int(os.environ.get("PROXY_DEFECT_SEED", "0"))


def _faint(x: torch.Tensor, kind: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = list(FAINT_DEFECTS).index(kind)
    a = faint_defect(kind).apply(x, generator=seeded_generator(x.device, 11 + k + 100 * DEFECT_SEED, batch))
    return a.image, a.mask[:, 0]


@torch.inference_mode()
def validate(model_path: Path) -> dict:
    """Per synthetic kind: image AUROC of the default score (normal vs defective copies), pixel AUROC of the maps."""
    loaded = load_model(model_path)
    cfg, scorer, name = loaded.config, loaded.scorer(), loaded.default_score
    col = scorer.names.index(name)
    val = dataset_for(cfg.data, "val", loaded.input_spec)
    makers = {**{f"faint/{k}": (lambda x, i, k=k: _faint(x, k, i)) for k in FAINT_DEFECTS},
              **{f"sharp/{k}": (lambda x, i, k=k: sharp_defects(x, k, i)) for k in SHARP}}
    normal, synthetic, pixels = [], {k: [] for k in makers}, {k: ([], []) for k in makers}
    for i, b in enumerate(eval_loader(val, 8)):
        x = b["image"]
        normal.append(scorer.run(x)[0][:, col].numpy())
        for kind, make in makers.items():
            xd, mask = make(x, i)
            s, m = scorer.run(xd)
            synthetic[kind].append(s[:, col].numpy())
            pixels[kind][0].append(m.numpy())
            pixels[kind][1].append(mask.numpy())
    normal = np.concatenate(normal)
    out = {"score": name, "n_val": len(val), "kinds": {}}
    for kind in makers:
        out["kinds"][kind] = separation(normal, np.concatenate(synthetic[kind]), np.concatenate(pixels[kind][0]),
                                        np.concatenate(pixels[kind][1]))
    return out


def main() -> None:
    args = study_arguments(__doc__.splitlines()[0], "studies/surface_proxy/results", "runs/surface_proxy").parse_args()
    for cat, dest, cfg, work in pending_runs(args):
        c0, t0 = cpu_seconds(), time.perf_counter()
        res = train(cfg, work / "train", overwrite=True, progress=False)
        fit = {"cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_mb()}
        c1 = cpu_seconds()
        validation = validate(res.model_path)
        val_cpu = cpu_seconds() - c1
        c2 = cpu_seconds()
        test = run_test(res.model_path, work / "test", progress=False).metrics
        at = test.get("at_threshold", {})
        result = {"name": args.name, "category": cat, "seed": args.seed, "defect_seed": DEFECT_SEED,
                  "overrides": args.overrides,
                  "config": cfg.identity(),
                  "threads": args.threads, "fit": fit, "validation": validation, "validation_cpu_s": val_cpu,
                  "test": {"image_auroc": test["image_auroc"], "pixel_auroc": test["pixel_auroc"],
                           "aupro": test["aupro"], "catch_rate": at.get("catch_rate"),
                           "false_alarm_rate": at.get("false_alarm_rate"), "by_defect": at.get("by_defect"),
                           "cpu_s": cpu_seconds() - c2, "peak_rss_mb": peak_mb()},
                  "command": " ".join(sys.argv)}
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(result, indent=2))
        faint = np.mean([(v["image_auroc"] + v["pixel_auroc"]) / 2 for k, v in validation["kinds"].items()
                         if k.startswith("faint/")])
        print(f"{args.name} {cat}: faint {faint:.4f}, test image {test['image_auroc']:.4f} pixel "
              f"{test['pixel_auroc']:.4f}, fit {fit['cpu_s']:.0f} CPU s", flush=True)


if __name__ == "__main__":
    main()
