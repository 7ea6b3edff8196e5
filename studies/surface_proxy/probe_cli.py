"""What the probes of the map share: the pairs a variant wins over a baseline, and their command lines (per category
of seed-0 models, or one model file), each writing its JSON."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from fusion_probe import CATEGORIES


def wins(results: dict, variants: list[str], baseline: str) -> dict[str, int]:
    """Per variant: the (category, kind) pairs in which its pooled pixel AUROC beats ``baseline``'s."""
    out = {name: 0 for name in variants}
    for cat in results.values():
        for row in cat["kinds"].values():
            for name in out:
                out[name] += row[name]["pooled"] > row[baseline]["pooled"]
    return out


def categories_main(probe: Callable[[Path], dict], description: str, variants: list[str], baseline: str) -> None:
    """``probe(model.pt)`` for each category's seed-0 model under --runs, the results written to --output after each
    (a file already there is added to), then the pairs each variant won."""
    ap = argparse.ArgumentParser(description=description.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/level_probe/default"))
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    for cat in args.categories.split(","):
        print(cat, flush=True)
        results[cat] = probe(args.runs / f"{cat}_seed0" / "model.pt")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"pairs won over {baseline} (pooled pixel AUROC):", json.dumps(wins(results, variants, baseline)))


def model_main(diagnose: Callable[[Path], dict], description: str) -> None:
    """``diagnose(model.pt)`` for one model file, its result written to --output."""
    ap = argparse.ArgumentParser(description=description.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = diagnose(args.model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
