"""``scgan demo``: write the built-in demo data set, fit the default detector on one category, test, report."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scgan.commands.common import add_run_options, build_config, print_metrics

if TYPE_CHECKING:
    from scgan.config import Config
    from scgan.inference.evaluate import TestOutput

HELP = "write the built-in demo data, fit the default detector on it, test, report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--category", default=None, help="demo category (default: the object-like one)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier demo's run in OUTPUT/train")
    p.add_argument("--no-progress", action="store_true")
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    res = run_demo(build_config(args), args.output, category=args.category, progress=not args.no_progress,
                   overwrite=args.overwrite)
    print_metrics(res.metrics, res.output_dir)
    return 0


def run_demo(cfg: Config, output_dir: str | Path, category: str | None = None, progress: bool = True,
             overwrite: bool = False) -> TestOutput:
    """Generate data under output_dir/data, train into output_dir/train, test into output_dir/test.

    An earlier demo's training run in output_dir/train is refused unless ``overwrite``.
    """
    from scgan.data.demo import DEMO_CATEGORIES, make_demo_dataset
    from scgan.inference.evaluate import run_test
    from scgan.training.fit import train
    from scgan.training.outdir import existing_run

    out = Path(output_dir)
    if existing_run(out / "train") and not overwrite:
        raise FileExistsError(f"{out} already holds a demo run; pass --overwrite to replace it (make demo does)")
    category = category or DEMO_CATEGORIES[-1]
    if category not in DEMO_CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; valid: {', '.join(DEMO_CATEGORIES)}")
    data_root = out / "data"
    if not (data_root / category / "train").is_dir():
        print(f"writing the demo data set to {data_root}")
        make_demo_dataset(data_root)
    cfg.data.dataset, cfg.data.root, cfg.data.category = "mvtec", str(data_root), category
    print(f"fitting the {cfg.preset} preset ({cfg.kind}) on demo category '{category}'")
    res = train(cfg, out / "train", progress=progress, overwrite=overwrite)
    if res.model_path is None:  # a non-zero rank of a multi-device run: rank 0 tests
        raise RuntimeError("the demo is tested by rank 0 only")
    return run_test(res.model_path, out / "test", progress=progress, warn=False)  # the training warned already
