"""``scgan benchmark`` and ``scgan ablate``: train and test categories x seeds; the paper's tables."""
from __future__ import annotations

import argparse
from pathlib import Path

from scgan.commands.common import LazyChoices, add_run_options, build_config, int_in
from scgan.utils.limits import JOBS, THREADS

BENCHMARK_HELP = "train + test categories x seeds; a table like the paper's Table 1/2"
ABLATE_HELP = "one of the paper's ablation studies over categories x seeds"


def _studies() -> tuple[str, ...]:
    from scgan.experiments.studies import STUDIES

    return tuple(STUDIES)


def _study_datasets() -> tuple[str, ...]:
    from scgan.experiments.studies import STUDY_DATASETS

    return STUDY_DATASETS


def add_arguments(p: argparse.ArgumentParser, ablate: bool) -> None:
    if ablate:
        p.add_argument("study", choices=LazyChoices(_studies), metavar="STUDY",
                       help="n_patches (Table 3), structure (Tables 4-5), augmentation (Table 6), "
                            "loss_weights (Fig. 10), beta (Fig. 11; re-scores the base runs)")
    p.add_argument("--dataset", choices=LazyChoices(_study_datasets), default="mvtec", metavar="DATASET",
                   help="mvtec (default) or btad")
    p.add_argument("--root", required=True, help="dataset root holding the category folders")
    p.add_argument("--categories", help="comma-separated (default: every category found under --root)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--name", help="sub-folder for the tables (default <study>_<dataset>)")
    p.add_argument("--jobs", type=int_in(JOBS), default=1, help="runs at once (separate processes)")
    p.add_argument("--threads", type=int_in(THREADS), default=None,
                   help="torch threads per run (default: cores / jobs); results depend on it, never on --jobs")
    p.add_argument("--no-progress", action="store_true")
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from scgan.experiments.studies import run_study
    from scgan.utils.runinfo import available_cores, command_line

    cfg = build_config(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if args.jobs < 1:
        raise ValueError("--jobs must be >= 1")
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    study = "benchmark" if args.command == "benchmark" else args.study
    out = run_study(study, cfg, dataset=args.dataset, root=args.root, categories=cats, seeds=seeds,
                    results=Path(args.results), name=args.name, jobs=args.jobs,
                    threads=args.threads or max(1, available_cores() // args.jobs), command=command_line(),
                    progress=not args.no_progress)
    print((out / "table.md").read_text())
    print(f"tables: {out / 'table.md'}, {out / 'table.csv'}")
    return 0
