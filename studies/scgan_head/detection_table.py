"""Table 1 with and without the learned head, from the result files the detection runs wrote (no training).

For each category and seed it reads the reported model's (last epoch's) test metrics:

- SCGAN + head (``default`` preset): ``results/detection_default/<category>_seed<k>/curve.json``
  (``studies/scgan_head/detection_quality.sh default``), which also holds the run's CPU time;
- SCGAN without a head (``cpu`` preset): for bottle and metal_nut Table 1's runs
  (``results/benchmark_mvtec_256px``) re-scored by ``scgan test`` into ``--rescored`` (they were trained before
  ``ssim_max`` and ``msgms_max`` existed; re-scoring changes no weight and no calibration), else
  ``results/detection_cpu/<category>_seed<k>/curve.json`` (``studies/scgan_head/detection_quality.sh cpu``).

It prints and writes ``table.md``, ``table.json`` and ``curves.png`` to ``--output``: mean ± std over the seeds
found, each run's numbers, the image AUROC bars the learned head was set, and how often ``auto`` (chosen on
validation images and
confetti, never on test images) picked the score that was best on the test set. That last figure is an observation: the
"best on test" column is an oracle that no model may use.

    python studies/scgan_head/detection_table.py      # after the runs: reads results/, writes results/table1_detection
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scgan.experiments.paper import SCGAN_MVTEC
from scgan.utils.tables import fmt_mean_std, markdown_table, num, pct

CATEGORIES = ("bottle", "metal_nut", "magnetic_tile")
SEEDS = (0, 1, 2)
# The image AUROC bars the learned head was set (the paper's SCGAN where it publishes one).
BARS = {"bottle": 0.983, "metal_nut": 0.901, "magnetic_tile": 0.90}
PIXEL_BAR, CPU_BAR = 0.95, 30.0


def _from_curve(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    final = next(r for r in d["rows"] if r["reported_model"])
    return {"scores": final["image_auroc"], "default": final["default_score"], "pixel_auroc": final["pixel_auroc"],
            "aupro": final["aupro"], "cpu_min": d["cost"]["total_cpu_s"] / 60 + final.get("scoring_cpu_s", 0) / 60,
            "threads": d["threads"], "source": str(path)}


def _from_metrics(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    return {"scores": {k: v["image_auroc"] for k, v in m["scores"].items()}, "default": m["default_score"],
            "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"], "cpu_min": None, "threads": None,
            "source": str(path)}


def collect(results: Path, rescored: Path, head_runs: str = "detection_default",
            reselect: Path | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{model: {category: [run per seed found]}} for model in ("head", "headless").

    ``reselect``: a ``studies/scgan_head/reselect.py`` output (reselect.json) for the head runs; each run found there
    gets ``refit``, the score today's ``auto`` picks when re-fitted on the run's validation split."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"head": {}, "headless": {}}
    refit = {}
    if reselect is not None and reselect.exists():
        picks = json.loads(reselect.read_text())
        if Path(picks.get("curves_folder", "")).name == head_runs:  # picks made for these runs, not others
            refit = {r["run"]: r["new"]["selected"] for r in picks["runs"]}
    for cat in CATEGORIES:
        for seed in SEEDS:
            head = _from_curve(results / head_runs / f"{cat}_seed{seed}" / "curve.json")
            if head is not None and f"{cat}_seed{seed}" in refit:
                head["refit"] = refit[f"{cat}_seed{seed}"]
            bare = (_from_metrics(rescored / f"{cat}_seed{seed}" / "metrics.json")
                    or _from_curve(results / "detection_cpu" / f"{cat}_seed{seed}" / "curve.json"))
            for model, run in (("head", head), ("headless", bare)):
                if run is not None:
                    out[model].setdefault(cat, []).append({**run, "seed": seed})
    return out


def pick(run: dict[str, Any]) -> str:
    """The run's default score under today's rule: re-fitted where reselect.py did, else as trained."""
    return run.get("refit") or run["default"]


def best_on_test(run: dict[str, Any]) -> str:
    return max(run["scores"], key=lambda s: -1.0 if run["scores"][s] is None else run["scores"][s])


def _ms(runs: list[dict[str, Any]], key) -> str:
    return fmt_mean_std([key(r) for r in runs]) if runs else "-"


def markdown(data: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    head_rows, seed_rows, match = [], [], []
    for cat in CATEGORIES:
        h, b = data["head"].get(cat, []), data["headless"].get(cat, [])
        paper = SCGAN_MVTEC.get(cat)
        head_rows.append([
            cat, num(paper) if paper else "-", f"{len(b)} / {len(h)}",
            _ms(b, lambda r: r["scores"]["as"]), _ms(b, lambda r: r["scores"][r["default"]]),
            _ms(b, lambda r: r["scores"][best_on_test(r)]), _ms(b, lambda r: r["pixel_auroc"]),
            _ms(b, lambda r: r["aupro"]),
            _ms(h, lambda r: r["scores"][r["default"]]), _ms(h, lambda r: r["scores"][pick(r)]),
            _ms(h, lambda r: r["scores"].get("seg_max")),
            _ms(h, lambda r: r["pixel_auroc"]), _ms(h, lambda r: r["aupro"]),
            fmt_mean_std([r["cpu_min"] for r in h], scale=1.0) if h else "-",
        ])
        for model, runs in (("SCGAN (cpu)", b), ("SCGAN + head (default)", h)):
            for r in runs:
                best = best_on_test(r)
                match.append(best == pick(r))
                seed_rows.append([cat, r["seed"], model, f"{r['default']} {pct(r['scores'][r['default']])}",
                                  f"{pick(r)} {pct(r['scores'][pick(r)])}",
                                  f"{best} {pct(r['scores'][best])}", pct(r["scores"]["as"]),
                                  pct(r["scores"].get("seg_max")), pct(r["pixel_auroc"]), pct(r["aupro"]),
                                  num(r["cpu_min"], 1, missing="-"), r["threads"] or "-"])
    main = markdown_table(
        ["category", "paper SCGAN", "runs (head-less / head)", "SCGAN: AS (paper score)", "SCGAN: auto (default)",
         "SCGAN: best on test (oracle)", "SCGAN: pixel AUROC", "SCGAN: AUPRO", "+ head: auto as trained",
         "+ head: auto, today's rule", "+ head: seg_max", "+ head: pixel AUROC", "+ head: AUPRO",
         "+ head: CPU min (train + test)"], head_rows)
    per_seed = markdown_table(
        ["category", "seed", "model", "auto's pick as trained (test AUROC)", "today's rule", "best on test", "AS",
         "seg_max", "pixel AUROC", "AUPRO", "CPU min", "threads"], seed_rows)
    bars = []
    for cat in CATEGORIES:
        h = data["head"].get(cat, [])
        img = [r["scores"][pick(r)] for r in h]
        pix = [r["pixel_auroc"] for r in h]
        cpu = [r["cpu_min"] for r in h]
        if not h:
            bars.append(f"- {cat}: no run of the default preset")
            continue
        def met(values, ok) -> str:
            return f"met by {sum(map(ok, values))} of {len(values)}"

        bars.append(f"- {cat} ({len(h)} seeds): image AUROC {', '.join(pct(v) for v in img)} against >= "
                    f"{pct(BARS[cat])}: {met(img, lambda v, bar=BARS[cat]: v >= bar)}; pixel AUROC "
                    f"{', '.join(pct(v) for v in pix)} against >= {pct(PIXEL_BAR)}: "
                    f"{met(pix, lambda v: v >= PIXEL_BAR)}; CPU minutes {', '.join(num(v) for v in cpu)} "
                    f"against <= {num(CPU_BAR)}: {met(cpu, lambda v: v <= CPU_BAR)}")
    n = len(match)
    refits = sum("refit" in r for runs in data["head"].values() for r in runs)
    rule = (f"\"Today's rule\" is the pick of `auto` as the default preset now makes it (confetti at strengths 1, "
            f"0.5 and 0.25), re-fitted on each run's own validation split by `studies/scgan_head/reselect.py` for the "
            f"{refits} head run(s) trained before that rule; the bars and the match count use it." if refits else
            "\"Today's rule\" is each run's own pick: the runs were trained with the rule the preset has now.")
    return "\n".join([
        "# Table 1 with the learned head",
        "",
        "Image AUROC % on the test split, mean ± std over the seeds found; pixel AUROC and AUPRO at 256 x 256 (the "
        "masks' stored resolution). Every model is its run's last epoch; `auto` chose each model's default score on "
        "normal validation images and confetti-pasted copies of them. \"Best on test\" is an oracle, shown only to "
        "say how much a better choice would give; nothing uses it. SCGAN (cpu) for bottle and metal_nut is Table 1's "
        "runs (results/benchmark_mvtec_256px) re-scored with today's scores; CPU minutes are user + sys of the "
        "training process (data loading and per-epoch validation included) plus testing the reported model.",
        "", main, "", rule, "", "## The bars (default preset)", "", *bars, "",
        f"## auto's choice against the best score on the test set: {sum(match)} of {n} runs matched", "",
        "The head-less bottle and metal_nut models were calibrated before `ssim_max` and `msgms_max` existed, "
        "so their `auto` chose among AS, L_con, L_enc and map_max; their best-on-test column ranges over all six.",
        "",
        per_seed, ""])


def plot_curves(results: Path, path: Path, head_runs: str = "detection_default") -> bool:
    """One panel per category: seg_max and the default score's image AUROC against CPU minutes, per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CATEGORIES), figsize=(5 * len(CATEGORIES), 4), sharey=True)
    drawn = False
    for ax, cat in zip(axes, CATEGORIES):
        for seed in SEEDS:
            f = results / head_runs / f"{cat}_seed{seed}" / "curve.json"
            if not f.exists():
                continue
            rows = json.loads(f.read_text())["rows"]
            xs = [r["cpu_min"] for r in rows]
            line, = ax.plot(xs, [r["image_auroc"]["seg_max"] for r in rows], marker="o", label=f"seg_max, seed {seed}")
            ax.plot(xs, [r["image_auroc"][r["default_score"]] for r in rows], marker="x", linestyle="--",
                    color=line.get_color(), label=f"auto's pick as trained, seed {seed}")
            drawn = True
        if cat in BARS:
            ax.axhline(BARS[cat], color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{cat} (bar dotted)")
        ax.set_xlabel("CPU minutes (training, 1 thread unless the run says otherwise)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("image AUROC (test; last point = reported model)")
    fig.suptitle("default preset (SCGAN + head): image AUROC against training cost; checkpoints scored after training")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the results folder")
    p.add_argument("--rescored", default="results/table1_detection/headless_rescored",
                   help="scgan test outputs of Table 1's head-less bottle / metal_nut models, <category>_seed<k>/")
    p.add_argument("--head-runs", default="detection_default",
                   help="the folder under --results of the head runs, <category>_seed<k>/curve.json")
    p.add_argument("--reselect", default="results/table1_detection/reselect/reselect.json",
                   help="studies/scgan_head/reselect.py's output for the head runs (used if it exists)")
    p.add_argument("--output", default="results/table1_detection")
    args = p.parse_args(argv)
    data = collect(Path(args.results), Path(args.rescored), args.head_runs, Path(args.reselect))
    if not any(data["head"].values()) and not any(data["headless"].values()):
        print(f"no detection results found under {args.results}", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(data)
    (out / "table.md").write_text(text)
    plot_curves(Path(args.results), out / "curves.png", args.head_runs)
    (out / "table.json").write_text(json.dumps(data, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
