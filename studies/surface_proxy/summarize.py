"""The proxy's report (README.md): per category, each setting's faint and sharp criteria beside its test-set
numbers, and Spearman's rank correlation between each proxy and the real defects' image and pixel AUROC.

    python studies/surface_proxy/summarize.py --only s > stage1_report.md     # the settings named s* (stage 1)
    python studies/surface_proxy/summarize.py --only m > stage2_report.md     # the candidates named m* (stage 2)
    python studies/surface_proxy/summarize.py --only c > stage3_report.md     # the candidates named c* (stage 3)
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr


def load(results: Path, only: str = "") -> dict[str, dict[str, dict]]:
    """{category: {setting: result}} of every stored run (seed 0) whose setting's name starts with ``only``."""
    runs: dict[str, dict[str, dict]] = defaultdict(dict)
    for path in sorted(results.glob(f"{only}*/*_seed0.json")):
        r = json.loads(path.read_text())
        runs[r["category"]][r["name"]] = r
    return runs


def q(result: dict, kind: str) -> float:
    v = result["validation"]["kinds"][kind]
    return (v["image_auroc"] + v["pixel_auroc"]) / 2


def faint_ranks(runs: dict[str, dict[str, dict]], names: list[str], cats: list[str]) -> dict[str, list[float]]:
    """Per setting, its rank (1 = best) within each (category, faint kind)."""
    ranks: dict[str, list[float]] = {n: [] for n in names}
    for cat in cats:
        kinds = [k for k in runs[cat][names[0]]["validation"]["kinds"] if k.startswith("faint/")]
        for kind in kinds:
            r = rankdata([-q(runs[cat][n], kind) for n in names])
            for n, rank in zip(names, r):
                ranks[n].append(float(rank))
    return ranks


def rho(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="studies/surface_proxy/results")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default="", help="only the settings named with this prefix (s, m, c: stages 1, 2, 3)")
    args = ap.parse_args()
    runs = load(Path(args.results), args.only)
    cats = [c for c in ("bottle", "metal_nut", "magnetic_tile") if c in runs]
    names = sorted(set.intersection(*(set(runs[c]) for c in cats)))
    report: dict = {"settings": names, "categories": {}}
    overall = faint_ranks(runs, names, cats)
    print(f"{len(names)} settings on {', '.join(cats)}\n")
    print("| setting | faint mean rank (worst) | " + " | ".join(f"{c}: faint q / sharp q / test image / pixel"
                                                         for c in cats) + " |")
    print("|---|---|" + "---|" * len(cats))
    for n in sorted(names, key=lambda n: np.mean(overall[n])):
        cells = []
        for c in cats:
            r = runs[c][n]
            kinds = r["validation"]["kinds"]
            fq = np.mean([q(r, k) for k in kinds if k.startswith("faint/")])
            sq = np.mean([q(r, k) for k in kinds if k.startswith("sharp/")])
            cells.append(f"{fq:.4f} / {sq:.4f} / {100 * r['test']['image_auroc']:.1f} / "
                         f"{100 * r['test']['pixel_auroc']:.1f}")
        print(f"| {n} | {np.mean(overall[n]):.2f} ({max(overall[n]):.0f}) | " + " | ".join(cells) + " |")
    if "magnetic_tile" in runs:  # the rule's cost: fit + test on magnetic_tile, one thread; the peak while fitting
        print("\n| setting | faint mean rank | fit + test CPU min on magnetic_tile | peak MB while fitting |")
        print("|---|---|---|---|")
        for n in sorted(names, key=lambda n: np.mean(overall[n])):
            r = runs["magnetic_tile"][n]
            print(f"| {n} | {np.mean(overall[n]):.2f} | {(r['fit']['cpu_s'] + r['test']['cpu_s']) / 60:.2f} | "
                  f"{r['fit']['peak_rss_mb']:.0f} |")
    print("\nSpearman's rho over the settings, against the real defects' image / pixel AUROC:\n")
    print("| category | proxy | rho image | rho pixel |")
    print("|---|---|---|---|")
    for c in cats:
        real_i = [runs[c][n]["test"]["image_auroc"] for n in names]
        real_p = [runs[c][n]["test"]["pixel_auroc"] for n in names]
        within = faint_ranks(runs, names, [c])
        kinds = list(runs[c][names[0]]["validation"]["kinds"])
        proxies = {"faint aggregate (-mean rank)": [-np.mean(within[n]) for n in names],
                   "faint mean q": [np.mean([q(runs[c][n], k) for k in kinds if k.startswith("faint/")])
                                    for n in names],
                   "sharp mean q (the first criterion)": [np.mean([q(runs[c][n], k) for k in kinds
                                                                   if k.startswith("sharp/")]) for n in names],
                   **{k: [q(runs[c][n], k) for n in names] for k in kinds}}
        report["categories"][c] = {}
        for label, values in proxies.items():
            ri, rp = rho(values, real_i), rho(values, real_p)
            report["categories"][c][label] = {"rho_image": ri, "rho_pixel": rp}
            print(f"| {c} | {label} | {ri:+.2f} | {rp:+.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
