"""What the SCGAN adds beside the features: the feature model, the SCGAN + head model and their fusion, judged on
validation images with synthetic defects only (criterion in README.md, written before the runs).

For each category and seed, both models of ``benchmarks/detectors.py``'s runs are loaded; the validation images
(the same split for both: the same files and split seed) get the five synthetic defect kinds of ``settings.py``,
made once at the data's 256 px and brought to each model's input as a file would be. Each model's default score
is normalised by its calibration (min-max on normal validation images) and its map by its heat-map scale; the
fusion is their mean.

    python studies/feature_detector/fusion.py --runs results/detectors \
        --output studies/feature_detector/results/fusion.json

A pair already in the output file is not scored again. Afterwards, to report what the decision did (never to
choose), ``--observe-test`` scores the test sets the same way and writes ``fusion_test.json`` beside the output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from settings import KINDS, defects  # noqa: E402  (this folder's own script)

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import dataset_for
from scgan.data.io import image_to_array, prepare_image, resize_map, tensor_to_image
from scgan.evaluation.metrics import image_auroc, pixel_auroc

CATEGORIES = ("bottle", "metal_nut", "magnetic_tile")


def score(loaded, images: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Normalised default scores (N,) and heat maps (each at 256 x 256) of uint8 RGB images for one model."""
    scorer, name, cal = loaded.scorer(), loaded.default_score, loaded.calibration
    col = scorer.names.index(name)
    scores, heats = [], []
    with torch.inference_mode():
        for img in images:
            x = torch.from_numpy(image_to_array(prepare_image(img, loaded.input_spec))[None])
            s, m = scorer.run(x)
            scores.append(float(cal.normalize(name, s[:, col].numpy())[0]))
            heats.append(resize_map(cal.heat(m[0].numpy()), img.shape[:2]))
    return np.asarray(scores), heats


def criterion(normal: np.ndarray, synthetic: dict, maps: dict, masks: dict) -> dict:
    kinds = {}
    for kind in KINDS:
        labels = np.r_[np.zeros(len(normal)), np.ones(len(synthetic[kind]))]
        keep = [m.any() for m in masks[kind]]
        kinds[kind] = {"image_auroc": image_auroc(np.r_[normal, synthetic[kind]], labels),
                       "pixel_auroc": pixel_auroc(np.stack([m for m, k in zip(maps[kind], keep) if k]),
                                                  np.stack([m for m, k in zip(masks[kind], keep) if k]))}
    return {"kinds": kinds, "V": float(np.mean([(v["image_auroc"] + v["pixel_auroc"]) / 2 for v in kinds.values()]))}


def evaluate(feature_path: Path, scgan_path: Path) -> dict:
    models = {"features": load_model(feature_path), "scgan": load_model(scgan_path)}
    val = dataset_for(models["features"].config.data, "val", 256)  # the shared data's own size, RGB
    assert [s.path for s in val.samples] == [s.path for s in dataset_for(models["scgan"].config.data, "val",
                                                                          64).samples], "different validation splits"
    clean = [val.images[i] for i in range(len(val))]
    x = torch.from_numpy(np.stack([image_to_array(im) for im in clean]))
    made = {kind: defects(x, kind, 0) for kind in KINDS}
    defective = {kind: [tensor_to_image(t) for t in made[kind][0]] for kind in KINDS}
    masks = {kind: list(made[kind][1].numpy()) for kind in KINDS}
    out, per_model = {}, {}
    for name, loaded in models.items():
        normal, _ = score(loaded, clean)
        per_model[name] = {"normal": normal, **{kind: score(loaded, defective[kind]) for kind in KINDS}}
        out[name] = criterion(normal, {k: per_model[name][k][0] for k in KINDS},
                              {k: per_model[name][k][1] for k in KINDS}, masks)
    f, g = per_model["features"], per_model["scgan"]
    out["fusion"] = criterion((f["normal"] + g["normal"]) / 2, {k: (f[k][0] + g[k][0]) / 2 for k in KINDS},
                              {k: [(a + b) / 2 for a, b in zip(f[k][1], g[k][1])] for k in KINDS}, masks)
    return out


def observe_test(feature_path: Path, scgan_path: Path) -> dict:
    """Afterwards, never to choose: image and pixel AUROC of each model and of the fusion on the real test set
    (maps as the fusion sees them: each model's heat-map scale, at the data's 256 px)."""
    models = {"features": load_model(feature_path), "scgan": load_model(scgan_path)}
    test = dataset_for(models["features"].config.data, "test", 256)
    images = [test.images[i] for i in range(len(test))]
    labels = np.array([s.label for s in test.samples])
    masks = test.stored_masks()
    scored = {name: score(loaded, images) for name, loaded in models.items()}
    scored["fusion"] = ((scored["features"][0] + scored["scgan"][0]) / 2,
                        [(a + b) / 2 for a, b in zip(scored["features"][1], scored["scgan"][1])])
    return {name: {"image_auroc": image_auroc(sc, labels), "pixel_auroc": pixel_auroc(np.stack(maps), masks)}
            for name, (sc, maps) in scored.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="results/detectors")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--output", default="studies/feature_detector/results/fusion.json")
    ap.add_argument("--observe-test", action="store_true",
                    help="afterwards: the test sets' AUROC of each model and the fusion (never used to choose)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    runs = Path(args.runs)
    if args.observe_test:
        observe(runs, args.seeds.split(","), Path(args.output).with_name("fusion_test.json"))
        return
    output = Path(args.output)
    done = json.loads(output.read_text())["runs"] if output.exists() else {}  # a finished pair is never redone
    results = {}
    for cat in CATEGORIES:
        for seed in args.seeds.split(","):
            key = f"{cat}_seed{seed}"
            paths = [runs / p / key / "train" / "model.pt" for p in ("default", "scgan")]
            if not all(p.exists() for p in paths):
                print(f"missing: {key}")
                continue
            results[key] = done[key] if key in done else evaluate(*paths)
            print(key, {m: round(v["V"], 4) for m, v in results[key].items()}, flush=True)
    summary = {m: float(np.mean([r[m]["V"] for r in results.values()])) for m in ("features", "scgan", "fusion")}
    by_cat = {cat: {m: float(np.mean([r[m]["V"] for k, r in results.items() if k.startswith(cat)]))
                    for m in summary} for cat in CATEGORIES}
    # The criterion's condition; what was decided (and why the cost bars kept the fusion out) is in README.md.
    met = summary["fusion"] >= summary["features"] + 0.005 and all(
        v["fusion"] >= v["features"] - 0.005 for v in by_cat.values())
    record = {"mean_V": summary, "by_category": by_cat, "criterion_met": met, "runs": results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    print(json.dumps({"mean_V": summary, "by_category": by_cat, "criterion_met": met}, indent=2))


def observe(runs: Path, seeds: list[str], output: Path) -> None:
    """``observe_test`` for every category and seed, and the means per category, into ``output``."""
    results = {}
    for cat in CATEGORIES:
        for seed in seeds:
            key = f"{cat}_seed{seed}"
            results[key] = observe_test(*[runs / p / key / "train" / "model.pt" for p in ("default", "scgan")])
            print(key, {m: {k: round(100 * v, 1) for k, v in r.items()} for m, r in results[key].items()}, flush=True)
    means = {cat: {m: {k: float(np.mean([r[m][k] for key, r in results.items() if key.startswith(cat)]))
                       for k in ("image_auroc", "pixel_auroc")} for m in ("features", "scgan", "fusion")}
             for cat in CATEGORIES}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"by_category": means, "runs": results}, indent=2))
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()
