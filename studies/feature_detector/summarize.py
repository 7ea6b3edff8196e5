"""The study's table: V per candidate (README.md's criterion), per category, and the costs the tie rule reads.

    python studies/feature_detector/summarize.py [NAME ...]     # default: every candidate with results
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CATEGORIES = ("bottle", "metal_nut", "magnetic_tile")


def row(name: str) -> dict | None:
    runs = {c: json.loads(p.read_text()) for c in CATEGORIES if (p := RESULTS / name / f"{c}_seed0.json").exists()}
    if set(runs) != set(CATEGORIES):
        return None
    v = {c: r["validation"]["criterion"] for c, r in runs.items()}
    mt = runs["magnetic_tile"]
    return {"name": name, "V": float(np.mean(list(v.values()))), **v, "overrides": " ".join(mt["overrides"]),
            "fit_cpu_s_mt": mt["fit"]["cpu_s"], "peak_mb": max(r["fit"]["peak_rss_mb"] for r in runs.values()),
            "score_ms": float(np.mean([r["validation"]["scoring_cpu_ms_per_image"] for r in runs.values()]))}


def main() -> None:
    names = sys.argv[1:] or sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
    rows = [r for n in names if (r := row(n)) is not None]
    print("| candidate | settings | V | bottle | metal_nut | magnetic_tile | fit CPU s (magnetic_tile) | "
          "scoring CPU ms/image | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["V"]):
        print(f"| {r['name']} | `{r['overrides']}` | {r['V']:.4f} | {r['bottle']:.4f} | {r['metal_nut']:.4f} | "
              f"{r['magnetic_tile']:.4f} | {r['fit_cpu_s_mt']:.0f} | {r['score_ms']:.0f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
