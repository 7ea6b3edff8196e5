"""A probe, on validation images and faint synthetic defects only: does judging each map location against how
high normal maps run there (the border, a bright rim) separate the faint kinds better than the map's peak?

For a fitted model: the smoothed maps of up to --train-images training images (in-sample: their patches may be in
the bank, so these maps run a little low), brought to a G x G grid of normalised coordinates; per location their
mean mu and standard deviation sd (floored at a tenth of the median sd). Image scores on the validation images and
their faint copies (the proxy's kinds, the same seeds): the default score; max(map - mu); max((map - mu) / sd).
Nothing from a test split is read.

    python studies/surface_proxy/position_probe.py MODEL.pt [MODEL.pt ...] --output probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from scgan.artifacts.model_file import load_model
from scgan.data.datasets import dataset_for, eval_loader
from scgan.data.faint import FAINT_DEFECTS, faint_defect
from scgan.utils.seed import seeded_generator

GRID = 64


@torch.inference_mode()
def probe(path: Path, limit: int) -> dict:
    loaded = load_model(path)
    cfg, scorer, name = loaded.config, loaded.scorer(), loaded.default_score
    col = scorer.names.index(name)
    train = dataset_for(cfg.data, "train", loaded.input_spec)
    grids = []
    for b in eval_loader(train, 8):
        grids.append(F.interpolate(scorer.run(b["image"])[1][:, None], size=(GRID, GRID), mode="area"))
        if sum(len(g) for g in grids) >= limit:
            break
    g = torch.cat(grids)[:limit]
    mu, sd = g.mean(0, keepdim=True), g.std(0, keepdim=True)
    sd = sd.clamp_min(0.1 * sd.median())

    def scores(x: torch.Tensor) -> dict[str, np.ndarray]:
        s, m = scorer.run(x)
        m = m[:, None]
        mu_i = F.interpolate(mu, size=m.shape[-2:], mode="bilinear", align_corners=False)
        sd_i = F.interpolate(sd, size=m.shape[-2:], mode="bilinear", align_corners=False)
        return {"map": s[:, col].numpy(), "minus": (m - mu_i).flatten(1).amax(1).numpy(),
                "z": ((m - mu_i) / sd_i).flatten(1).amax(1).numpy()}

    val = dataset_for(cfg.data, "val", loaded.input_spec)
    normal, synth = [], {k: [] for k in FAINT_DEFECTS}
    for i, b in enumerate(eval_loader(val, 8)):
        x = b["image"]
        normal.append(scores(x))
        for k, kind in enumerate(FAINT_DEFECTS):
            xd = faint_defect(kind).apply(x, generator=seeded_generator(x.device, 11 + k, i)).image
            synth[kind].append(scores(xd))
    cat = lambda rows: {s: np.concatenate([r[s] for r in rows]) for s in rows[0]}  # noqa: E731
    n = cat(normal)
    out = {"model": str(path), "category": cfg.data.category or Path(cfg.data.root).name, "score": name,
           "n_train_maps": len(g), "n_val": len(val), "kinds": {}}
    for kind in FAINT_DEFECTS:
        a = cat(synth[kind])
        y = np.r_[np.zeros(len(n["map"])), np.ones(len(a["map"]))]
        out["kinds"][kind] = {s: float(roc_auc_score(y, np.r_[n[s], a[s]])) for s in n}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--train-images", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    results = []
    for m in args.models:
        r = probe(m, args.train_images)
        results.append(r)
        print(r["category"], {k: {s: round(v, 4) for s, v in row.items()} for k, row in r["kinds"].items()},
              flush=True)
    args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
