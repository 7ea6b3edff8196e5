"""``scgan demo``: write the built-in demo data set, train briefly on one category, test, report."""
from __future__ import annotations

from pathlib import Path

from scgan.config import Config
from scgan.evaluate import TestOutput, run_test
from scgan.training.fit import train

# Demo defaults on top of the cpu preset; the user's key=value overrides still win. 60 epochs, not 30.
# With the plain Tanh (before the cpu preset's 1.1 x tanh), at 30 epochs on an Intel Xeon, seed 0 had the
# "auto" rule pick map_max (image AUROC 88.0%); seeds 1 and 2 picked l_con (99.2%, 99.8%). At 60 epochs all
# three picked l_con: 98.0%, 99.5%, 99.5%, and 99.2%, 100.0%, 99.5% with the cpu preset's 1.1 x tanh.
DEMO_OVERRIDES = {"image_size": 64, "epochs": 60, "batch_size": 16}  # epochs, not the preset's step budget


def run_demo(cfg: Config, output_dir: str | Path, category: str | None = None, progress: bool = True,
             overwrite: bool = False) -> TestOutput:
    """Generate data under output_dir/data, train into output_dir/train, test into output_dir/test.

    An earlier demo's training run in output_dir/train is refused unless ``overwrite``.
    """
    from scgan.data.demo import DEMO_CATEGORIES, make_demo_dataset

    out = Path(output_dir)
    category = category or DEMO_CATEGORIES[-1]
    if category not in DEMO_CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; valid: {', '.join(DEMO_CATEGORIES)}")
    data_root = out / "data"
    if not (data_root / category / "train").is_dir():
        print(f"writing the demo data set to {data_root}")
        make_demo_dataset(data_root)
    cfg.data.dataset, cfg.data.root, cfg.data.category = "mvtec", str(data_root), category
    print(f"training on demo category '{category}' for {cfg.train.epochs} epochs at {cfg.model.image_size} px")
    res = train(cfg, out / "train", progress=progress, overwrite=overwrite)
    if res.model_path is None:  # a non-zero rank of a multi-device run: rank 0 tests
        raise RuntimeError("the demo is tested by rank 0 only")
    return run_test(res.model_path, out / "test", progress=progress)
