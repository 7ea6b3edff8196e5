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
    p.add_argument("--normal", help="folder of normal images (searched recursively; at least 5, 20 or more for a "
                                    "sound threshold); default: the normal images the model file keeps")
    p.add_argument("--output", required=True, help="the new model file (may be the model file itself, never the "
                                                   "Lightning checkpoint it was read from)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="score settings, e.g. threshold_quantile=0.995 default_score=map_max; "
                        "skip_bad_images=true skips unreadable images")
    p.add_argument("--defects", metavar="DIR", help="a folder of defective images (or a feedback folder: its "
                                                    "missed defects) to set the threshold from, with --catch or "
                                                    "--false-alarms")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--catch", type=float, metavar="RATE", help="with --defects: the share of defects to catch")
    target.add_argument("--false-alarms", type=float, metavar="RATE",
                        help="with --defects: the share of normal images that may be flagged")


def _check_output(loaded, checkpoint, output: Path) -> None:
    """Refuse to write the slim model file over the Lightning checkpoint it was read from (the run could no longer
    resume); a model file may be re-calibrated in place (one slim file atomically replaced by another)."""
    source = loaded.path if loaded.path is not None else checkpoint
    if loaded.training_checkpoint and isinstance(source, (str, Path)) and same_file(source, output):
        raise ValueError(f"--output {output} is the training checkpoint being read: a model file written there would "
                         "replace its optimiser states and loop counters, and the run could no longer resume; "
                         "choose another --output, e.g. a model.pt")


def recalibrate(checkpoint, normal_dir, output, overrides: dict | None = None, batch_size: int = 32,
                defects=None, catch: float | None = None, false_alarms: float | None = None):
    """Re-fit a trained model's calibration on a folder of normal images and write it as a new model file.

    ``overrides`` may change score settings (RECALIBRATION_KEYS, e.g. ``threshold_quantile``), and
    ``skip_bad_images`` skips unreadable images; the weights, and every other setting, are copied unchanged. Fewer
    than MIN_VAL_IMAGES normal images are refused, fewer than MIN_CALIBRATION_IMAGES warned about (the rule of
    :func:`scgan.data.datasets.calibration_warning`). The output folder's lock is held throughout, so a training or
    another calibration there is refused. ``normal_dir`` None: the normal images the model file keeps.

    ``defects`` (a folder of defective images, or a feedback folder's missed defects) with ``catch`` or
    ``false_alarms``: the default score's threshold is set for that target rate instead
    (:func:`scgan.calibration.stats.target_threshold`); a target that cannot be met is refused, nothing written.
    Returns (output path, the new Calibration, the TargetThreshold or None).
    """
    from scgan.artifacts.model_file import LoadedModel, load_model, save_model
    from scgan.config import set_value
    from scgan.data.datasets import MIN_VAL_IMAGES, calibration_warning, normal_images
    from scgan.inference.calibrate import calibrate, kept_crossfit, recalibration_config
    from scgan.training.update import calibration_set, image_loader
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
        ds = None if normal_dir is None else normal_images(normal_dir, loaded.input_spec, skip_bad_images=skip_bad)
        images = calibration_set(loaded, None) if ds is None else list(ds.images)
        small = calibration_warning(len(images), minimum=MIN_VAL_IMAGES)
        scorer = loaded.kind.build_scorer(cfg, loaded.parts)
        cal = calibrate(scorer, image_loader(images, batch_size), cfg, crossfit=kept_crossfit(loaded.calibration))
        target = None
        if defects is not None:
            target = defect_threshold(loaded, cfg, scorer, cal, images, defects, catch, false_alarms)
        meta = {**loaded.meta, "calibration": run_info(
            recalibrated_from=str(loaded.path), normal_images=str(normal_dir or "kept in the model file"),
            n_images=len(images), overrides=dict(overrides), skipped=[str(p) for p in ds.skipped] if ds else [],
            **({"calibration_warning": small} if small else {}))}
        step = recalibration_step(loaded, cfg, cal, normal_dir)  # before the write: the file may be replaced in place
        path = save_model(output, cfg, loaded.parts, cal, loaded.augmentation, meta, input_spec=loaded.input_spec,
                          calibration_images=images, lineage=[*loaded.lineage, *step])
    if small:
        log.warning("%s", small)
    return path, cal, target


def defect_threshold(loaded, cfg, scorer, cal, normal: list, defects, catch: float | None,
                     false_alarms: float | None):
    """Set ``cal``'s default-score threshold from the normal images' and the defective images' scores for the target
    rate (in place); the TargetThreshold. ValueError when the target cannot be met (naming which)."""
    from scgan.calibration.stats import target_threshold
    from scgan.data.feedback import is_feedback_dir, read_feedback
    from scgan.training.update import expand_sources, read_new_images, score_images

    if catch is None and false_alarms is None:
        raise ValueError("--defects needs a target: --catch RATE (e.g. 0.95) or --false-alarms RATE (e.g. 0.01)")
    files = [m.path for m in read_feedback(defects, "missed_defect")] if is_feedback_dir(defects) \
        else expand_sources([defects])
    found = read_new_images(files, loaded.input_spec)[0]
    if not found:
        raise ValueError(f"no defective images in {defects}")
    name = cal.resolve(cfg.score.default_score, loaded.kind.score_preference)
    kept = cal.normal_values(name)  # every normal score the calibration rests on, where it keeps them
    result = target_threshold(score_images(scorer, normal, name) if kept is None else kept,
                              score_images(scorer, [im for *_, im in found], name), catch=catch,
                              false_alarms=false_alarms)
    if result.refusal:
        raise ValueError(f"{result.refusal}; nothing was written")
    cal.scores[name].threshold = result.threshold
    if name == "map_max" and cal.heat_fitted and result.threshold > cal.heat_low:  # green stays the threshold
        cal.heat_threshold = result.threshold
    cal.threshold_rule = {**result.record(), "score": name, "defects": str(defects),
                          "feedback": is_feedback_dir(defects)}
    return result


def recalibration_step(loaded, cfg, cal, normal_dir) -> list[dict]:
    """The lineage step of re-fitting ``loaded``'s calibration (none for a model read from no file): the previous
    version's hash, the threshold and the number of normal images before and after."""
    from scgan.artifacts.lineage import file_sha256, lineage_step

    if loaded.path is None or not Path(loaded.path).is_file():
        return []
    old = loaded.calibration
    score = loaded.default_score
    changed = {"threshold": [old.scores[score].threshold if old and score in old.scores else float("nan"),
                             cal.scores[cal.resolve(cfg.score.default_score, loaded.kind.score_preference)].threshold],
               "calibration_images": [old.n_images if old else 0, cal.n_images], "normal_images": str(normal_dir),
               **({"threshold_rule": cal.threshold_rule} if cal.threshold_rule else {})}
    return [lineage_step("calibrate", loaded.path, file_sha256(loaded.path), changed)]


def run(args: argparse.Namespace) -> int:
    from scgan.artifacts.model_file import load_model
    from scgan.config import parse_overrides

    if (args.catch is not None or args.false_alarms is not None) and not args.defects:
        raise ValueError("--catch and --false-alarms set the threshold from defective images: give --defects DIR")
    path, cal, target = recalibrate(args.checkpoint, args.normal, args.output, parse_overrides(args.overrides),
                                    defects=args.defects, catch=args.catch, false_alarms=args.false_alarms)
    default = load_model(path).default_score
    rule = f"quantile {cal.quantile}" if target is None else f"{target.target.replace('_', '-')} target"
    print(f"calibration fitted on {cal.n_images} normal image(s); default score {default}, threshold "
          f"{cal.scores[default].threshold:.6g} ({rule}); written to {path}")
    if target is not None:
        for line in target.lines()[1:]:
            print(line)
        if target.warning:
            log.warning("%s", target.warning)
        if cal.threshold_rule.get("feedback"):
            log.warning("these defects were marked because the model missed them: a biased sample of defects, the "
                        "hardest ones, so the catch rate above is not the line's; for the catch-rate estimate give "
                        "--defects a folder of defective images collected at random")
    return 0
