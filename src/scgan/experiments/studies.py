"""``scgan benchmark`` and ``scgan ablate``: which runs each study needs, and the tables it writes."""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scgan.config import Config, apply_mapping, config_from_dict
from scgan.data.datasets import DATASETS, category_kind
from scgan.experiments import paper
from scgan.experiments.runs import RunSpec, execute_all, make_spec
from scgan.models.checks import check_config
from scgan.models.scgan.kind import SCGAN
from scgan.models.scgan.scorer import anomaly_score
from scgan.utils.atomic import atomic_write_text
from scgan.utils.names import csv_cell, mpl_text
from scgan.utils.runinfo import run_info
from scgan.utils.tables import MISSING, csv_text, fmt_mean_std, markdown_table, num

SCORES_SHOWN = ("as", "map_max")  # the paper's score and the local peak score, side by side


@dataclass
class Variant:
    """One column of a study: a name, config overrides, and the paper's numbers for it (if any)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, float] | None = None
    # Where the paper publishes group averages only (Table 6): {"texture": ..., "object": ..., "all": ...}, over
    # all of the paper's categories of the group; shown on the average rows.
    paper_groups: dict[str, float] | None = None


STUDIES: dict[str, list[Variant]] = {
    "n_patches": [Variant(f"N={n}", {"augment.n_patches": n}, paper.N_PATCHES[n]) for n in (10, 30, 50, 100)],
    "structure": [
        Variant("struc1", {"model.attention": False, "loss.w_ssim": 0.0}, paper.STRUCTURES["struc1"]),
        Variant("struc2", {"model.attention": False}, paper.STRUCTURES["struc2"]),
        Variant("struc3", {"loss.w_ssim": 0.0}, paper.STRUCTURES["struc3"]),
        Variant("struc4", {}, paper.STRUCTURES["struc4"]),
    ],
    "augmentation": [Variant(name, {"augment.name": name}, paper_groups=paper.AUGMENTATION_AVERAGES.get(name))
                     for name in ("none", "cutout", "cutout_color", "confetti", "copypaste", "copypaste_color")],
    "loss_weights": [
        Variant(f"alpha={a}", {"loss.w_enc": a[0], "loss.w_con": a[1], "loss.w_adv": a[2], "loss.w_ssim": a[3]})
        for a in ((1, 40, 1, 40), (1, 1, 1, 1), (1, 10, 1, 10), (1, 80, 1, 80), (10, 40, 1, 40), (1, 40, 10, 40))
    ],
    "beta": [Variant("base", {})],  # beta only changes scoring: re-scored from the base runs' per-image scores
}
BETAS = tuple(round(0.1 * i, 1) for i in range(11))
STUDY_DATASETS = ("mvtec", "btad")  # the data sets whose tables the paper publishes


def discover_categories(dataset: str, root: str | Path) -> list[str]:
    """Categories of a dataset root in the paper's order (textures, then objects; BTAD 01-03)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    known, good = DATASETS[dataset].KNOWN, DATASETS[dataset].NORMAL
    found = [c for c in known if (root / c / "train" / good).is_dir()]
    extra = sorted((p.name for p in root.iterdir() if (p / "train" / good).is_dir() and p.name not in known),
                   key=lambda c: (category_kind(c) != "texture", c))
    cats = found + extra
    if not cats:
        raise ValueError(f"no categories with train/{good} found under {root}")
    return cats


def _metric(m: dict, score: str | None, key: str = "image_auroc") -> float:
    v = m["scores"][score][key] if score else m.get(key)
    return float("nan") if v is None else float(v)


@dataclass
class StudyResult:
    """All runs' metrics of a study, indexed [variant][category] -> list over seeds."""

    name: str
    variants: list[Variant]
    categories: list[str]
    seeds: list[int]
    metrics: dict[str, dict[str, list[dict]]]
    run_dirs: dict[str, dict[str, list[str]]]


def _groups(dataset: str, categories: list[str]) -> list[tuple[str, list[str]]]:
    if dataset == "btad":
        return [("BTAD", categories)]
    tex = [c for c in categories if category_kind(c) == "texture"]
    obj = [c for c in categories if c not in tex]
    return [(g, cs) for g, cs in (("Texture", tex), ("Object", obj)) if cs]


def _mean_over(metrics: dict[str, list[dict]], cats: list[str], fn) -> list[float]:
    """Per-seed mean over categories (so the std is over seeds, as in the per-category cells)."""
    n_seeds = min(len(metrics[c]) for c in cats)
    return [float(np.nanmean([fn(metrics[c][i]) for c in cats])) for i in range(n_seeds)]


def benchmark_table(dataset: str, res: StudyResult) -> tuple[str, list[list[str]]]:
    """Markdown and CSV rows laid out like the paper's Table 1 (MVTec) or Table 2 (BTAD)."""
    metrics = res.metrics[res.variants[0].name]
    ref = paper.SCGAN_BTAD if dataset == "btad" else paper.SCGAN_MVTEC
    ref2 = None if dataset == "btad" else paper.GANOMALY_MVTEC
    header = ["Group", "Category", "Paper SCGAN", *(["Paper GANomaly"] if ref2 else []),
              "Ours AS (paper score)", "Ours map_max", "Ours auto (default)", "Ours pixel AUROC", "Ours AUPRO"]
    cols = [lambda m: _metric(m, "as"), lambda m: _metric(m, "map_max"), lambda m: _metric(m, None, "image_auroc"),
            lambda m: _metric(m, None, "pixel_auroc"), lambda m: _metric(m, None, "aupro")]
    rows: list[list[str]] = []

    def paper_mean(table: dict | None, cats: list[str]) -> str:
        if table is None:
            return ""
        vals = [table[c] for c in cats if c in table]
        return num(np.mean(vals)) if len(vals) == len(cats) else MISSING

    groups = _groups(dataset, res.categories)
    for group, cats in groups:
        for c in cats:
            rows.append([group, c, paper_mean(ref, [c]), *([paper_mean(ref2, [c])] if ref2 else []),
                         *(fmt_mean_std([f(m) for m in metrics[c]]) for f in cols)])
        if len(groups) > 1 or len(cats) > 1:
            rows.append([group, "**Average**", paper_mean(ref, cats), *([paper_mean(ref2, cats)] if ref2 else []),
                         *(fmt_mean_std(_mean_over(metrics, cats, f)) for f in cols)])
    if len(groups) > 1:
        rows.append(["All", "**Average**", paper_mean(ref, res.categories),
                     *([paper_mean(ref2, res.categories)] if ref2 else []),
                     *(fmt_mean_std(_mean_over(metrics, res.categories, f)) for f in cols)])
    return markdown_table(header, rows) + "\n", [header, *rows]


def ablation_table(dataset: str, res: StudyResult) -> tuple[str, list[list[str]]]:
    """One row per category (+ averages), per variant: ours (AS), ours (map_max), paper."""
    header = ["Group", "Category"]
    for v in res.variants:
        paper_label = [f"{v.name} paper"] if v.paper else [f"{v.name} paper (its group average)"] if v.paper_groups \
            else []
        header += [f"{v.name} AS", f"{v.name} map_max"] + paper_label
    rows: list[list[str]] = []
    groups = _groups(dataset, res.categories)
    for group, cats in groups + ([("All", res.categories)] if len(groups) > 1 else []):
        lines = [(c, [c]) for c in cats] if group != "All" else []
        if len(cats) > 1 or group == "All":
            lines.append(("**Average**", cats))
        for label, cs in lines:
            row = [group, label]
            for v in res.variants:
                m = res.metrics[v.name]
                for s in SCORES_SHOWN:
                    row.append(fmt_mean_std(_mean_over(m, cs, lambda mm, s=s: _metric(mm, s))))
                if v.paper:
                    vals = [v.paper[c] for c in cs if c in v.paper]
                    row.append(num(np.mean(vals)) if len(vals) == len(cs) else MISSING)
                elif v.paper_groups:
                    average = label == "**Average**" and group.lower() in v.paper_groups
                    row.append(num(v.paper_groups[group.lower()]) if average else MISSING)
            rows.append(row)
    return markdown_table(header, rows) + "\n", [header, *rows]


def _csv(rows: list[list[str]]) -> str:
    """table.csv: the table's header and rows without Markdown's bold marks."""
    plain = [[csv_cell(c.replace("**", "")) for c in r] for r in rows]
    return csv_text(plain[0], plain[1:])


def run_study(study: str, base: Config, *, dataset: str, root: str, categories: list[str] | None,
              seeds: list[int], results: Path, name: str | None = None, jobs: int = 1, threads: int = 1,
              command: str = "", progress: bool = True) -> Path:
    """Train/test every (variant, category, seed) not yet done, then write the study's tables."""
    if study != "benchmark" and study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; valid: benchmark, {', '.join(STUDIES)}")
    if not set(SCGAN.sections) <= set(base.section_names()):  # the tables report the SCGAN's scores (AS, beta)
        raise ValueError(f"the paper's tables are the SCGAN's; preset {base.preset!r} fits a {base.kind} model: "
                         "pass --preset cpu (the preset of our tables) or --preset paper")
    variants = [Variant("base", {})] if study == "benchmark" else STUDIES[study]
    cats = categories or discover_categories(dataset, root)
    start = time.time()
    specs: list[tuple[str, str, int, RunSpec]] = []
    for v in variants:
        for c in cats:
            for seed in seeds:
                cfg = config_from_dict(base.to_dict())
                apply_mapping(cfg, {"data.dataset": dataset, "data.root": str(root), "data.category": c,
                                    "train.seed": seed, **v.overrides})
                check_config(cfg)
                specs.append((v.name, c, seed, make_spec(cfg, results / "runs", threads, command)))
    reused = sorted({s.run_dir for *_, s in specs if s.done()})
    done = execute_all([s for *_, s in specs], jobs=jobs, progress=progress)
    res = StudyResult(study, variants, cats, seeds, {v.name: {c: [] for c in cats} for v in variants},
                      {v.name: {c: [] for c in cats} for v in variants})
    for vname, c, _seed, spec in specs:
        res.metrics[vname][c].append(done[spec.run_dir])
        res.run_dirs[vname][c].append(spec.run_dir)
    out = results / (name or f"{study}_{dataset}")
    out.mkdir(parents=True, exist_ok=True)
    if study == "benchmark":
        md, rows = benchmark_table(dataset, res)
        title = "Table 2 (BTAD)" if dataset == "btad" else "Table 1 (MVTec AD)"
    elif study == "beta":
        md, rows = beta_study(res, out)
        title = "Fig. 11 (beta)"
    else:
        md, rows = ablation_table(dataset, res)
        title = {"n_patches": "Table 3 (N)", "structure": "Tables 4-5 (Struc1-4)", "augmentation": "Table 6",
                 "loss_weights": "Fig. 10 (loss weights)"}[study]
    info = run_info(study=study, dataset=dataset, categories=cats, seeds=seeds, preset=base.preset,
                    threads=threads, jobs=jobs, wall_time_s=round(time.time() - start, 1),
                    model="last epoch of every run (no model selection, no test-set tuning)")
    summary = {"info": info, "base_config": base.to_dict(), "variants": [v.__dict__ for v in variants],
               "runs": res.run_dirs, "reused_runs": reused,
               "data": {c: next(s.data for _, cc, _, s in specs if cc == c) for c in cats}}
    header = (f"# {title} — ours vs the paper\n\nImage AUROC % (mean ± std over seeds {seeds}) unless stated. "
              f"AS = the paper's score (beta = {base.model.beta}); map_max = peak of the smoothed residual map; "
              f"auto = the default: per model, the score that best separated normal validation images from "
              f"synthetic defects (chosen without test images; each run's choice is in its metrics.json). "
              f"Every model is the last epoch's; nothing was selected on test images. "
              f"{_resolution_sentence(res)}\n\n"
              f"- command: `{info['command']}`\n- preset: `{base.preset}`, seeds {seeds}, threads {threads}\n"
              f"- git commit: `{info['git_commit']}`\n- wall time of this invocation: {info['wall_time_s']} s\n"
              f"- runs reused from earlier invocations (not retrained): {len(reused)} of "
              f"{len({s.run_dir for *_, s in specs})} (listed in summary.json)\n"
              f"- per-run metrics: `{(results / 'runs').as_posix()}/<dataset>_<category>/<config hash>_seed<k>/"
              "test/metrics.json`\n\n")
    atomic_write_text(out / "table.md", header + md)
    atomic_write_text(out / "table.csv", _csv(rows))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return out


def _resolution_sentence(res: StudyResult) -> str:
    """Where pixel metrics were computed, from the runs' metrics.json (``pixel_metrics_resolution``)."""
    found = {tuple(m["pixel_metrics_resolution"]) if m.get("pixel_metrics_resolution") else None
             for per_cat in res.metrics.values() for runs in per_cat.values() for m in runs}
    sizes = sorted(" x ".join(map(str, r)) for r in found if r)
    if not sizes:
        return "No pixel metrics (image-level runs only)."
    older = (" (runs tested before pixel metrics moved to the masks' resolution do not record it: they were computed"
             " at S)") if None in found else ""
    return f"Pixel AUROC and AUPRO at {', '.join(sizes)} px, the masks' stored resolution{older}."


def beta_study(res: StudyResult, out: Path) -> tuple[str, list[list[str]]]:
    """AUROC of AS = beta * L_con + (1 - beta) * L_enc for beta in 0..1, re-scored from the base runs."""
    from sklearn.metrics import roc_auc_score

    curves: dict[str, list[list[float]]] = {}
    for c in res.categories:
        per_seed = []
        for run_dir in res.run_dirs["base"][c]:
            with open(Path(run_dir) / "test" / "scores.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            y = np.array([int(r["label"]) for r in rows])
            l_con = np.array([float(r["l_con"]) for r in rows])
            l_enc = np.array([float(r["l_enc"]) for r in rows])
            per_seed.append([float(roc_auc_score(y, anomaly_score(l_con, l_enc, b))) for b in BETAS])
        curves[c] = per_seed
    header = ["Category", *(f"beta={b}" for b in BETAS)]
    rows = [[c, *(fmt_mean_std([s[i] for s in curves[c]]) for i in range(len(BETAS)))] for c in res.categories]
    n_seeds = min(len(v) for v in curves.values())
    mean_curve = [[float(np.mean([curves[c][s][i] for c in res.categories])) for i in range(len(BETAS))]
                  for s in range(n_seeds)]
    rows.append(["**Average**", *(fmt_mean_std([m[i] for m in mean_curve]) for i in range(len(BETAS)))])
    _plot_beta(curves, mean_curve, out / "beta.png")
    return markdown_table(header, rows) + "\n\n![beta](beta.png)\n", [header, *rows]


def _plot_beta(curves: dict[str, list[list[float]]], mean_curve: list[list[float]], path: Path) -> None:
    from matplotlib.figure import Figure

    from scgan.utils.atomic import atomic_write_with

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for c, per_seed in curves.items():
        ax.plot(BETAS, 100 * np.mean(per_seed, axis=0), marker="o", ms=3, alpha=0.6, label=mpl_text(c))
    ax.plot(BETAS, 100 * np.mean(mean_curve, axis=0), "k-", lw=2.5, label="mean")
    ax.axvline(0.8, color="grey", ls="--", lw=1)
    ax.set_xlabel("beta (AS = beta L_con + (1 - beta) L_enc)")
    ax.set_ylabel("image AUROC %")
    ax.set_title("AUROC versus beta (cf. the paper's Fig. 11)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_with(path, lambda f: fig.savefig(f, format="png"))
