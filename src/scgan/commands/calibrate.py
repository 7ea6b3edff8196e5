"""``scgan calibrate``: re-fit a trained model's calibration on a folder of normal images."""
from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from scgan.utils.atomic import same_file, writable_dir

HELP = "re-fit a trained model's calibration on a folder of normal images"

log = logging.getLogger("scgan")

SKIP_KEYS = ("skip_bad_images", "data.skip_bad_images")  # which images are read, not what the model is


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model.pt or a Lightning .ckpt written by 'scgan train'")
    p.add_argument("--normal", required=True, help="folder of normal images (searched recursively; at least 5, "
                                                   "20 or more for a sound threshold)")
    p.add_argument("--output", required=True, help="the new model file (may be the model file itself, never the "
                                                   "Lightning checkpoint it was read from)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="score settings, e.g. threshold_quantile=0.995 default_score=map_max; "
                        "skip_bad_images=true skips unreadable images")


def _check_output(loaded, checkpoint, output: Path) -> None:
    """Refuse to write the slim model file over the Lightning checkpoint it was read from (the run could no longer
    resume); a model file may be re-calibrated in place (one slim file atomically replaced by another)."""
    source = loaded.path if loaded.path is not None else checkpoint
    if loaded.training_checkpoint and isinstance(source, (str, Path)) and same_file(source, output):
        raise ValueError(f"--output {output} is the training checkpoint being read: a model file written there would "
                         "replace its optimiser states and loop counters, and the run could no longer resume; "
                         "choose another --output, e.g. a model.pt")


def recalibrate(checkpoint, normal_dir, output, overrides: dict | None = None, batch_size: int = 32):
    """Re-fit a trained model's calibration on a folder of normal images and write it as a new model file.

    ``overrides`` may change score settings (RECALIBRATION_KEYS, e.g. ``threshold_quantile``), and
    ``skip_bad_images`` skips unreadable images; the weights, and every other setting, are copied unchanged. Fewer
    than MIN_VAL_IMAGES normal images are refused, fewer than MIN_CALIBRATION_IMAGES warned about (the rule of
    :func:`scgan.data.datasets.calibration_warning`). The output folder's lock is held throughout, so a training or
    another calibration there is refused. Returns (output path, the new Calibration).
    """
    from scgan.artifacts.model_file import LoadedModel, load_model, save_model
    from scgan.config import set_value
    from scgan.data.datasets import MIN_VAL_IMAGES, calibration_warning, eval_loader, normal_images
    from scgan.inference.calibrate import calibrate, recalibration_config
    from scgan.utils.lock import folder_lock
    from scgan.utils.runinfo import run_info

    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    output = Path(output)
    _check_output(loaded, checkpoint, output)
    overrides = dict(overrides or {})
    skip = [overrides.pop(k) for k in SKIP_KEYS if k in overrides]
    cfg = recalibration_config(loaded.config, overrides)
    reading = copy.deepcopy(cfg)  # which images are read: checked like any setting, never saved with the model
    if skip:
        set_value(reading, "data.skip_bad_images", skip[-1])
    skip_bad = reading.data.skip_bad_images
    with folder_lock(writable_dir(output.parent), "calibrating"):
        ds = normal_images(normal_dir, loaded.input_spec, skip_bad_images=skip_bad)
        small = calibration_warning(len(ds), minimum=MIN_VAL_IMAGES)
        scorer = loaded.kind.build_scorer(cfg, loaded.parts)
        cal = calibrate(scorer, eval_loader(ds, batch_size), cfg)
        meta = {**loaded.meta, "calibration": run_info(
            recalibrated_from=str(loaded.path), normal_images=str(normal_dir), n_images=len(ds),
            overrides=dict(overrides), skipped=[str(p) for p in ds.skipped],
            **({"calibration_warning": small} if small else {}))}
        path = save_model(output, cfg, loaded.parts, cal, loaded.augmentation, meta, input_spec=loaded.input_spec)
    if small:
        log.warning("%s", small)
    return path, cal


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.model_file import load_model
    from scgan.config import parse_overrides

    path, cal = recalibrate(args.checkpoint, args.normal, args.output, parse_overrides(args.overrides))
    default = load_model(path).default_score
    print(f"calibration fitted on {cal.n_images} normal image(s); default score {default}, threshold "
          f"{cal.scores[default].threshold:.6g} (quantile {cal.quantile}); written to {path}")
    return 0
