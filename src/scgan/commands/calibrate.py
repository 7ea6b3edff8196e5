"""``scgan calibrate``: re-fit a trained model's calibration on a folder of normal images."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "re-fit a trained model's calibration on a folder of normal images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--normal", required=True, help="folder of normal images (searched recursively)")
    p.add_argument("--output", required=True, help="the new model file (may be the model file itself)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="score settings, e.g. threshold_quantile=0.995 default_score=map_max")


def recalibrate(checkpoint, normal_dir, output, overrides: dict | None = None, batch_size: int = 32):
    """Re-fit a trained model's calibration on a folder of normal images and write it as a new model file.

    ``overrides`` may change score settings (RECALIBRATION_KEYS, e.g. ``threshold_quantile``); the weights,
    and every other setting, are copied unchanged. Returns (output path, the new Calibration).
    """
    from scgan.artifacts.model_file import LoadedModel, load_model, save_model
    from scgan.calibration.fit import calibrate, recalibration_config
    from scgan.data.datasets import eval_loader, normal_images
    from scgan.utils.runinfo import run_info

    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    cfg = recalibration_config(loaded.config, overrides)
    ds = normal_images(normal_dir, loaded.input_spec, skip_bad_images=cfg.data.skip_bad_images)
    scorer = loaded.kind.build_scorer(cfg, loaded.parts)
    cal = calibrate(scorer, eval_loader(ds, batch_size), cfg)
    meta = {**loaded.meta, "calibration": run_info(recalibrated_from=str(loaded.path), normal_images=str(normal_dir),
                                                   n_images=len(ds), overrides=dict(overrides or {}))}
    path = save_model(Path(output), cfg, loaded.parts, cal, loaded.augmentation, meta, input_spec=loaded.input_spec)
    return path, cal


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.model_file import load_model
    from scgan.config import parse_overrides

    path, cal = recalibrate(args.checkpoint, args.normal, args.output, parse_overrides(args.overrides))
    default = load_model(path).default_score
    print(f"calibration fitted on {cal.n_images} normal image(s); default score {default}, threshold "
          f"{cal.scores[default].threshold:.6g} (quantile {cal.quantile}); written to {path}")
    return 0
