"""Fitting a fitted model's calibration again, and setting its threshold from a few real defects.

:func:`recalibrate` (``scgan calibrate``) fits a model file's calibration again on normal images (a folder, or those
the file keeps) and writes a new file that records the step in its lineage; with defective images and a target
(``--catch`` or ``--false-alarms``), :func:`defect_threshold` sets the default score's threshold from both images'
scores (the statistics: :func:`scgan.calibration.stats.target_threshold`). The helpers here read new images as a model
takes them and score them; ``scgan update`` uses them too, so that the images an update adds are read and scored
alike.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from scgan.artifacts.lineage import file_sha256, lineage_step
from scgan.artifacts.model_file import LoadedModel, load_model, save_model
from scgan.calibration.stats import Calibration, TargetThreshold, target_threshold
from scgan.config import Config, set_value
from scgan.data.datasets import MIN_VAL_IMAGES, calibration_warning, normal_images, shape_batches
from scgan.data.feedback import is_feedback_dir, read_feedback
from scgan.data.io import ImageReadError, InputSpec, expand_inputs, image_to_tensor, is_grey, load_image, to_channels
from scgan.inference.calibrate import calibrate, kept_crossfit, recalibration_config, scoring_changes
from scgan.utils.atomic import same_file, writable_dir
from scgan.utils.lock import folder_lock
from scgan.utils.runinfo import run_info

log = logging.getLogger("scgan")

SKIP_KEYS = ("skip_bad_images", "data.skip_bad_images")  # which images are read, not what the model is

BIASED_SAMPLE = ("these defects were marked because the model missed them: a biased sample of defects, the hardest "
                 "ones, so the catch rate above is not the line's; for the catch-rate estimate give --defects a "
                 "folder of defective images collected at random")


class _Images(Dataset):
    """uint8 (H, W, C) images as scoring items (``image`` float (C, H, W) in [-1, 1]), batched by shape."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def shape(self, index: int) -> tuple[int, int]:
        return tuple(self.images[index].shape[:2])

    def __getitem__(self, index: int) -> dict:
        return {"image": image_to_tensor(self.images[index]), "index": index}


def image_loader(images: list[np.ndarray], batch_size: int) -> DataLoader:
    """A loader over in-memory images, in batches of one shape (what :func:`calibrate` takes)."""
    ds = _Images(images)
    return DataLoader(ds, batch_sampler=shape_batches(ds, batch_size))


@torch.no_grad()
def score_images(scorer: nn.Module, images: list[np.ndarray], score: str) -> list[float]:
    """The ``score`` of each image, one at a time."""
    col = scorer.names.index(score)
    return [float(scorer.run(image_to_tensor(im)[None])[0][0, col]) for im in images]


def read_new_images(files: list[Path], spec: InputSpec, skip_bad_images: bool = False
                    ) -> tuple[list[tuple[Path, str, np.ndarray]], list[str]]:
    """(path, sha256, image as the model takes it) of each file, duplicates (by content) once; and the files
    skipped. A colour image for a grey model is refused (its colour would be lost); a grey one for a colour model is
    used as grey RGB, with one counted warning. An unreadable file is an error (skipped, counted, with
    ``skip_bad_images``)."""
    rgb = InputSpec(spec.size, spec.keep_aspect, spec.multiple, 3, spec.min_side)
    out: dict[str, tuple[Path, str, np.ndarray]] = {}
    skipped: list[str] = []
    grey_for_colour = 0
    for path in files:
        try:
            image = load_image(path, rgb)  # first: a FIFO or a folder is refused here, never opened for its hash
            digest = file_sha256(path)
        except (ImageReadError, OSError) as e:
            if not skip_bad_images:
                raise ImageReadError(f"{e}; nothing was written (skip_bad_images: --skip-bad-images)") from None
            skipped.append(str(path))
            continue
        grey = is_grey(image)
        if spec.channels == 1 and not grey:
            raise ValueError(f"{path} is a colour image but the model takes grey images (it was fitted on grey "
                             "ones): update it with images from the same camera; nothing was written")
        grey_for_colour += spec.channels == 3 and grey
        out.setdefault(digest, (path, digest, to_channels(image, spec.channels)))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s); first: {skipped[0]}", UserWarning, stacklevel=2)
    if grey_for_colour:
        log.warning("%d of %d new image(s) are grey but the model takes colour images; they are used as grey RGB",
                    grey_for_colour, len(files))
    return list(out.values()), skipped


def calibration_set(loaded: LoadedModel, normal_dir: str | Path | None) -> list[np.ndarray]:
    """The normal images the model's calibration rests on: ``normal_dir``'s when given, else those its file keeps."""
    if normal_dir is not None:
        return list(normal_images(normal_dir, loaded.input_spec).images)
    if loaded.calibration_images is None:
        raise ValueError(f"{loaded.path} keeps no calibration images (it was written before model files kept them): "
                         "give --normal DIR, normal images to fit the calibration on")
    rested = loaded.calibration.n_images if loaded.calibration is not None else 0
    if len(loaded.calibration_images) < rested:  # a fit on more than a model file keeps (MAX_KEPT_CALIBRATION_IMAGES)
        log.warning("the model file keeps %d of the %d normal images its calibration rested on: the new calibration "
                    "rests on those %d; give --normal DIR to fit it on all of them", len(loaded.calibration_images),
                    rested, len(loaded.calibration_images))
    return [im.numpy() for im in loaded.calibration_images]


def check_output(loaded: LoadedModel, checkpoint, output: Path) -> None:
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
    ``false_alarms``: the default score's threshold is set for that target rate instead (:func:`defect_threshold`);
    a target that cannot be met is refused, nothing written.
    Returns (output path, the new Calibration, the TargetThreshold or None).
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint)
    output = Path(output)
    check_output(loaded, checkpoint, output)
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
        kept = kept_crossfit(loaded.calibration, scoring_changes(loaded.config, cfg))
        cal = calibrate(scorer, image_loader(images, batch_size), cfg, crossfit=kept)
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


def defect_threshold(loaded: LoadedModel, cfg: Config, scorer: nn.Module, cal: Calibration, normal: list, defects,
                     catch: float | None, false_alarms: float | None) -> TargetThreshold:
    """Set ``cal``'s default-score threshold from the normal images' and the defective images' scores for the target
    rate (in place); the TargetThreshold. ``defects``: a folder of defective images, or a feedback folder (its missed
    defects). ValueError when the target cannot be met (naming which)."""
    if catch is None and false_alarms is None:
        raise ValueError("--defects needs a target: --catch RATE (e.g. 0.95) or --false-alarms RATE (e.g. 0.01)")
    files = [m.path for m in read_feedback(defects, "missed_defect")] if is_feedback_dir(defects) \
        else [f.path for f in expand_inputs([defects], allow_empty=True)]
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
    peak = getattr(scorer, "map_peak", "map_max")  # the score that is the shown map's peak (a kind's scorer says)
    if name == peak and cal.heat_fitted and result.threshold > cal.heat_low:  # green stays the threshold
        cal.heat_threshold = result.threshold
    cal.threshold_rule = {**result.record(), "score": name, "defects": str(defects),
                          "feedback": is_feedback_dir(defects)}
    return result


def threshold_warnings(target: TargetThreshold, cal: Calibration) -> list[str]:
    """What a person must be told about a threshold set from defects: the images cannot show its target, and
    defects marked from feedback are a biased sample (the hardest ones) for a catch rate."""
    return [*([target.warning] if target.warning else []), *([BIASED_SAMPLE] if cal.threshold_rule.get("feedback")
                                                               else [])]


def recalibration_step(loaded: LoadedModel, cfg: Config, cal: Calibration, normal_dir) -> list[dict]:
    """The lineage step of re-fitting ``loaded``'s calibration (none for a model read from no file): the previous
    version's hash, the threshold and the number of normal images before and after."""
    if loaded.path is None or not Path(loaded.path).is_file():
        return []
    old = loaded.calibration
    score = loaded.default_score
    changed = {"threshold": [old.scores[score].threshold if old and score in old.scores else float("nan"),
                             cal.scores[cal.resolve(cfg.score.default_score, loaded.kind.score_preference)].threshold],
               "calibration_images": [old.n_images if old else 0, cal.n_images], "normal_images": str(normal_dir),
               **({"threshold_rule": cal.threshold_rule} if cal.threshold_rule else {})}
    return [lineage_step("calibrate", loaded.path, file_sha256(loaded.path), changed)]
