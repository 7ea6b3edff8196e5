"""A probe, on validation images and faint synthetic defects only: does an image-level embedding distance beside
the patch distance separate the faint kinds better than the map's peak alone?

For a fitted model: every training image's mean patch feature (in the bank's space) gives a Gaussian (mean and
covariance shrunk by 0.1, as the patch whitening); an image's global score g is its Mahalanobis distance from
that. On the validation images and their faint copies (the proxy's kinds, the same seeds): image AUROC of the
model's default score, of g, and of their sum after each is divided by its median over the normal validation
images. Nothing from a test split is read.

    python studies/surface_proxy/global_probe.py MODEL.pt [MODEL.pt ...] --output probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import dataset_for, eval_loader
from scgan.data.faint import FAINT_DEFECTS, faint_defect
from scgan.models.patchcore.model import embed, whitening_transform
from scgan.utils.seed import seeded_generator


def pooled(scorer, x: torch.Tensor) -> torch.Tensor:
    """Each image's mean patch feature in the bank's space (B, D)."""
    out = []
    for one in x.split(1):
        f = embed(scorer.backbone, one, scorer.layout)
        b, d, h, w = f.shape
        out.append(scorer.memory.project(f.permute(0, 2, 3, 1).reshape(-1, d)).mean(0, keepdim=True))
    return torch.cat(out)


@torch.inference_mode()
def probe(path: Path) -> dict:
    loaded = load_model(path)
    cfg, scorer, name = loaded.config, loaded.scorer(), loaded.default_score
    col = scorer.names.index(name)
    train = dataset_for(cfg.data, "train", loaded.input_spec)
    e = torch.cat([pooled(scorer, b["image"]) for b in eval_loader(train, 8)])
    mean, w = whitening_transform(e, 0.1)

    def g(x: torch.Tensor) -> np.ndarray:
        return ((pooled(scorer, x) - mean) @ w).norm(dim=1).numpy()

    val = dataset_for(cfg.data, "val", loaded.input_spec)
    normal = {"map": [], "g": []}
    synth = {k: {"map": [], "g": []} for k in FAINT_DEFECTS}
    for i, b in enumerate(eval_loader(val, 8)):
        x = b["image"]
        normal["map"].append(scorer.run(x)[0][:, col].numpy())
        normal["g"].append(g(x))
        for k, kind in enumerate(FAINT_DEFECTS):
            xd = faint_defect(kind).apply(x, generator=seeded_generator(x.device, 11 + k, i)).image
            synth[kind]["map"].append(scorer.run(xd)[0][:, col].numpy())
            synth[kind]["g"].append(g(xd))
    n = {s: np.concatenate(v) for s, v in normal.items()}
    ref = {s: float(np.median(v)) for s, v in n.items()}
    out = {"model": str(path), "category": cfg.data.category, "score": name, "n_train": len(train),
           "n_val": len(val), "kinds": {}}
    for kind in FAINT_DEFECTS:
        a = {s: np.concatenate(v) for s, v in synth[kind].items()}
        y = np.r_[np.zeros(len(n["map"])), np.ones(len(a["map"]))]
        row = {}
        for label, pick in {"map": lambda d: d["map"], "g": lambda d: d["g"],
                            "sum": lambda d: d["map"] / ref["map"] + d["g"] / ref["g"],
                            "sum_half": lambda d: d["map"] / ref["map"] + 0.5 * d["g"] / ref["g"]}.items():
            row[label] = float(roc_auc_score(y, np.r_[pick(n), pick(a)]))
        out["kinds"][kind] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = []
    for m in args.models:
        r = probe(m)
        results.append(r)
        print(r["category"], {k: {s: round(v, 4) for s, v in row.items()} for k, row in r["kinds"].items()},
              flush=True)
    args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
