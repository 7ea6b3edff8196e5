"""Learning on the line: do false alarms go away when they are added to a fitted model with `scgan update`, and
what does it cost the test set?

For one category of the shared data: fit the default preset on a seeded quarter of the normal training images;
score the other three quarters (all normal) and take those the model calls anomalous (its false alarms); update the
model with a seeded half of them (`scgan update`'s own function, its default held-out share); report the other
half's false-alarm rate and that of all the unused normal images before and after, the test set's image AUROC
before and after (each model's default score), and the time of an update with 10 images. Nothing here chooses a
setting: the test set is only reported.

    OMP_NUM_THREADS=1 python studies/line_update/run.py --category bottle
    OMP_NUM_THREADS=1 python studies/line_update/run.py --category magnetic_tile
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scgan.artifacts.model_file import load_model
from scgan.config import load_config
from scgan.data.datasets import dataset_for, eval_loader, normal_images
from scgan.data.io import list_images
from scgan.evaluation.metrics import image_auroc
from scgan.inference.recalibrate import score_images
from scgan.models.scoring import score_loader
from scgan.training.fit import train
from scgan.training.update import update_model
from scgan.utils.runinfo import run_info

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CATEGORIES = {"bottle": DATA / "mvtec_ad" / "bottle", "metal_nut": DATA / "mvtec_ad" / "metal_nut",
              "magnetic_tile": DATA / "magnetic_tile"}
HERE = Path(__file__).resolve().parent


def link_all(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


def false_alarm_rate(model: Path, folder: Path) -> tuple[int, int]:
    """(called anomalous, images) of the normal images in ``folder`` by the model at ``model``."""
    loaded = load_model(model)
    images = list(normal_images(folder, loaded.input_spec).images)
    scores = np.array(score_images(loaded.scorer(), images, loaded.default_score))
    return int(loaded.calibration.decide(loaded.default_score, scores).sum()), len(images)


def test_auroc(model: Path, cfg) -> float:
    loaded = load_model(model)
    ds = dataset_for(cfg.data, "test", loaded.input_spec)
    res = score_loader(loaded.scorer(), eval_loader(ds, 8))
    return 100 * image_auroc(res.score(loaded.default_score), res.labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--category", choices=sorted(CATEGORIES), default="bottle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings on the default preset")
    args = p.parse_args()
    src = CATEGORIES[args.category]
    if not src.is_dir():
        raise SystemExit(f"{src} not found: this study needs the shared data (see ../shared/data/README.md)")
    normal = list_images(src / "train" / "good")
    order = np.random.default_rng(args.seed).permutation(len(normal))
    quarter = len(normal) // 4
    fit_files = sorted(normal[i] for i in order[:quarter])
    rest = sorted(normal[i] for i in order[quarter:])
    with tempfile.TemporaryDirectory(prefix="line_update_") as tmp:
        tmp = Path(tmp)
        root = tmp / args.category
        link_all(fit_files, root / "train" / "good")
        (root / "test").symlink_to(src / "test")
        (root / "ground_truth").symlink_to(src / "ground_truth")
        cfg = load_config("default", overrides={"data.dataset": "folder", "data.root": str(root),
                                                "data.category": args.category, "seed": args.seed,
                                                **dict(o.split("=", 1) for o in args.overrides)})
        t0 = time.perf_counter()
        model = train(cfg, tmp / "fit", progress=False).model_path
        fit_s = time.perf_counter() - t0
        loaded = load_model(model)
        rest_images = list(normal_images(link_all(rest, tmp / "rest"), loaded.input_spec).images)
        scores = np.array(score_images(loaded.scorer(), rest_images, loaded.default_score))
        flagged = [rest[i] for i in np.flatnonzero(loaded.calibration.decide(loaded.default_score, scores))]
        mix = np.random.default_rng(args.seed + 1).permutation(len(flagged))
        half = len(flagged) // 2
        used = sorted(flagged[i] for i in mix[:half])
        kept = sorted(flagged[i] for i in mix[half:])
        unused = sorted(set(rest) - set(used))
        print(f"{args.category}: fitted on {len(fit_files)} of {len(normal)} normal training images in {fit_s:.0f} s; "
              f"{len(flagged)} of the other {len(rest)} called anomalous (false alarms): {len(used)} to update with, "
              f"{len(kept)} kept out", flush=True)
        result = {"category": args.category, "seed": args.seed, "overrides": args.overrides,
                  "n_fit": len(fit_files), "n_rest": len(rest), "n_false_alarms": len(flagged), "n_update": len(used),
                  "n_kept_out": len(kept), "fit_s": round(fit_s, 1)}
        if not used:
            print("no false alarms to update with; nothing more to show")
        else:
            t0 = time.perf_counter()
            upd = update_model(model, used, tmp / "updated.pt")
            result["update_s"] = round(time.perf_counter() - t0, 1)
            ten = rest[:10]
            t0 = time.perf_counter()
            update_model(model, ten, tmp / "ten.pt")
            result["update_10_images_s"] = round(time.perf_counter() - t0, 1)
            result["threshold"] = [upd.threshold_before, upd.threshold_after]
            kept_dir, unused_dir = link_all(kept, tmp / "kept"), link_all(unused, tmp / "unused")
            for name, m in (("before", model), ("after", upd.path)):
                k = false_alarm_rate(m, kept_dir) if kept else (0, 0)
                u = false_alarm_rate(m, unused_dir)
                result[f"kept_out_false_alarms_{name}"] = list(k)
                result[f"unused_false_alarms_{name}"] = list(u)
                result[f"test_image_auroc_{name}"] = round(test_auroc(m, cfg), 2)
            # Where the kept-out false alarms stand: their scores over each model's threshold (a ratio above 1 is
            # a false alarm), and whether an update can absorb them at all (the same update with them added too).
            kept_images = list(normal_images(kept_dir, loaded.input_spec).images) if kept else []
            for name, m in (("before", model), ("after", upd.path)):
                lm = load_model(m)
                t = lm.calibration.scores[lm.default_score].threshold
                result[f"kept_out_score_over_threshold_{name}"] = [
                    round(v / t, 3) for v in score_images(lm.scorer(), kept_images, lm.default_score)]
            if kept:
                both = update_model(model, used + kept, tmp / "with_kept.pt", holdout=0.0)
                result["kept_out_false_alarms_after_update_with_them"] = list(false_alarm_rate(both.path, kept_dir))
            for name in ("before", "after"):
                k, u = result[f"kept_out_false_alarms_{name}"], result[f"unused_false_alarms_{name}"]
                print(f"{name:6}: kept-out false alarms {k[0]}/{k[1]} ({100 * k[0] / max(k[1], 1):.0f}%); all unused "
                      f"normal images {u[0]}/{u[1]} ({100 * u[0] / max(u[1], 1):.1f}%); test image AUROC "
                      f"{result[f'test_image_auroc_{name}']:.2f}")
            print(f"kept-out scores / threshold: before {result['kept_out_score_over_threshold_before']}, after "
                  f"{result['kept_out_score_over_threshold_after']}; still false alarms after an update with them "
                  f"too: {result.get('kept_out_false_alarms_after_update_with_them')}")
            print(f"update with {len(used)} images: {result['update_s']} s; with 10 images: "
                  f"{result['update_10_images_s']} s (threads {torch.get_num_threads()}, OMP_NUM_THREADS="
                  f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); threshold {upd.threshold_before:.4g} -> "
                  f"{upd.threshold_after:.4g}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.category}_seed{args.seed}.json"
    path.write_text(json.dumps({**result, "run": run_info()}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
