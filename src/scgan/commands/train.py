"""``scgan train``: fit a model on the normal images of one category."""
from __future__ import annotations

import argparse
from pathlib import Path

from scgan.commands.common import (
    add_cluster_options,
    add_data_options,
    add_device_options,
    add_run_options,
    build_config,
    print_calibration,
    test_and_print,
)

HELP = "fit a model on the normal images of one category"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_options(p, required=True)
    p.add_argument("--output", required=True, help="output folder (model.pt; an SCGAN also writes checkpoints, logs)")
    p.add_argument("--resume",
                   help="an SCGAN: resume from a checkpoint path, or 'auto' for OUTPUT/checkpoints/last.ckpt")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the training run OUTPUT holds, then train anew (without it such a folder is refused)")
    p.add_argument("--test", action="store_true", help="run 'scgan test' on the test split after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this process; ray: a PatchCore detector's training features are extracted "
                        "on a Ray cluster (pip install 'scgan[cluster]'; the training images must be reachable from "
                        "every node by these paths), the same bank as a local fit (an SCGAN: --strategy ddp)")
    add_cluster_options(p, "feature-extracting")
    add_device_options(p)
    add_run_options(p)


def run(args: argparse.Namespace) -> int:
    from scgan.training.fit import train

    extra: dict = {"data.root": args.root}
    if args.dataset is not None:  # else the preset / YAML / key=value value stands (mvtec by default)
        extra["data.dataset"] = args.dataset
    if args.category is not None:
        extra["data.category"] = args.category
    for key in ("accelerator", "devices", "strategy", "precision"):
        if getattr(args, key) is not None:
            extra[f"runtime.{key}"] = getattr(args, key)
    cfg = build_config(args, extra)
    engine = None
    if args.engine == "ray":
        from scgan.training.cluster import RayEngine

        engine = RayEngine(args.address, args.workers)
    elif args.address is not None:
        raise ValueError("--address names the Ray cluster of --engine ray: add --engine ray, or leave it out")
    res = train(cfg, args.output, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite,
                engine=engine)
    if res.model_path is None:
        return 0
    fitted = f"{res.epochs} epochs, " if res.epochs else ""
    print(f"model written to {res.model_path} ({fitted}{res.wall_time_s:.0f} s)")
    print_calibration(res.model_path, warn=False)  # the training warned already when it rests on few images
    if args.test:
        return test_and_print(res.model_path, Path(args.output) / "test", progress=not args.no_progress, warn=False)
    return 0
