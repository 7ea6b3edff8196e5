"""Updating a fitted model with new normal images, without fitting it again (``scgan update``).

The new images' parts join the model by its kind's updater (:data:`UPDATERS`; a kind says whether it has one with
``ModelKind.updatable``): a PatchCore detector's new patch features are computed with the model's own backbone,
layout and input, mapped into its bank's space (the bank's scale and whitening stay as fitted) and merged into the
bank by :func:`scgan.training.patchcore.merge_bank`, bounded by the configured bank size. A held-out share of the
new images joins the normal images the calibration was fitted on (the model file keeps them, at most 250), and the
calibration is fitted again by :func:`scgan.inference.calibrate.calibrate`, as fitting does. The new images are read
and scored as ``scgan calibrate --defects`` reads its images (:mod:`scgan.inference.recalibrate`). The new file
records its lineage; the input file is never written to.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scgan.artifacts.lineage import file_sha256, lineage_step
from scgan.artifacts.model_file import LoadedModel, load_model, save_model
from scgan.calibration.stats import Calibration
from scgan.config import Config
from scgan.data.feedback import read_feedback
from scgan.data.io import expand_inputs, image_to_tensor
from scgan.inference.calibrate import calibrate, kept_crossfit
from scgan.inference.recalibrate import calibration_set, image_loader, read_new_images, score_images
from scgan.models.patchcore.backbone import load_backbone
from scgan.models.patchcore.coreset import MergeBuffer
from scgan.models.patchcore.kind import layout
from scgan.models.patchcore.model import MemoryBank
from scgan.training.patchcore import bank_merger, patch_features
from scgan.utils.atomic import same_file, writable_dir
from scgan.utils.lock import folder_lock
from scgan.utils.runinfo import run_info

log = logging.getLogger("scgan")

# A kind's updater: (config, parts, new normal images uint8 (H, W, C) as the model takes them, generator) -> parts.
Updater = Callable[[Config, dict[str, nn.Module], list[np.ndarray], torch.Generator], dict[str, nn.Module]]

HOLDOUT = 0.2  # share of the new images kept out of the model, added to the calibration's normal images


class NotUpdatableError(ValueError):
    """A model of a kind whose fitted parts cannot take new images: it must be fitted again."""


def update_patchcore(cfg: Config, parts: dict[str, nn.Module], images: list[np.ndarray],
                     generator: torch.Generator) -> dict[str, nn.Module]:
    """A PatchCore detector's memory bank with the patch features of ``images`` merged in (at most
    ``patchcore.bank_size`` rows): every patch of every image, in buffers of at most ``patchcore.max_patches`` rows,
    each merged by the fit's own merge; its scale, whitening and backbone digest unchanged."""
    p = cfg.patchcore
    memory: MemoryBank = parts["memory"]
    backbone = load_backbone(p.backbone, max(p.layers))
    merged = MergeBuffer(memory.bank, p.max_patches, bank_merger(p, generator))
    with torch.no_grad():
        for im in images:
            merged.add(memory.project(patch_features(backbone, layout(cfg), image_to_tensor(im)[None])))
        bank = merged.close()
    # map_z's grid and the self map's statistics as fitted (the self map's normalisation too: not measured again)
    return {**parts, "memory": memory.with_bank(bank).eval()}


UPDATERS: dict[str, Updater] = {"patchcore": update_patchcore}


def register_updater(kind: str, updater: Updater) -> None:
    """Make models of ``kind`` updatable by ``updater`` (its ModelKind says ``updatable=True``)."""
    UPDATERS[kind] = updater


@dataclass
class AddedImage:
    """One new image: its name, sha256, where it went ("bank" or "validation"), its score before and after."""

    name: str
    sha256: str
    role: str
    before: float = float("nan")
    after: float = float("nan")


@dataclass
class UpdateResult:
    """What an update did: the file it wrote (and its sha256), the default score's threshold before and after,
    every added image with its scores, the parts' and the calibration's sizes before and after."""

    path: Path
    sha256: str
    parent_sha256: str
    score: str
    score_after: str
    threshold_before: float
    threshold_after: float
    images: list[AddedImage]
    calibration_images: tuple[int, int]
    bank_rows: tuple[int, int]
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def holdout_split(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(indices into the model, held-out indices) of n new images: a seeded ``share`` held out, at least one each
    way when n >= 2 and share > 0; none held out when n < 2."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"--holdout must be in [0, 1), got {share}")
    k = 0 if share == 0 or n < 2 else min(n - 1, max(1, round(share * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[k:]), sorted(order[:k])


def check_updatable(loaded: LoadedModel) -> None:
    """NotUpdatableError, one line saying to train again, for a model whose kind takes no new images."""
    kind = loaded.kind
    if not kind.updatable or kind.name not in UPDATERS:
        raise NotUpdatableError(f"{loaded.path} is a {kind.name} model ({kind.description}): its fitted parts cannot "
                                "take new images; train it again with 'scgan train' on the normal images with the "
                                "new ones added. Nothing was written")


def update_model(checkpoint: str | Path, sources: list[str | Path], output: str | Path, *,
                 feedback: str | Path | None = None, normal_dir: str | Path | None = None, holdout: float = HOLDOUT,
                 parent: str | None = None, overwrite: bool = False, skip_bad_images: bool = False,
                 batch_size: int = 8) -> UpdateResult:
    """Update the model file ``checkpoint`` with the new normal images under ``sources`` (and those marked false
    alarms in the feedback folder ``feedback``) into the new file ``output``; :class:`UpdateResult`.

    ``holdout``: the share of new images added to the calibration's normal images instead of the model; ``parent``:
    the sha256 (or its first digits) ``checkpoint`` must have; ``normal_dir``: calibrate on these normal images
    instead of those the model file keeps. The input is never written to; ``output`` is refused when it exists
    (unless ``overwrite``) and while another process holds its folder's lock.
    """
    start = time.perf_counter()
    checkpoint, output = Path(checkpoint), Path(output)
    loaded = load_model(checkpoint)
    check_updatable(loaded)
    own = file_sha256(checkpoint)
    if parent is not None and not own.startswith(parent.strip().lower()):
        raise ValueError(f"--checkpoint {checkpoint} is version {own[:12]}, not the parent {parent} this update "
                         "names ('scgan history' lists the versions); nothing was written")
    if output.exists() and same_file(output, checkpoint):
        raise ValueError(f"--output {output} is the model being updated: an update never overwrites its input; "
                         "choose a new file")
    with folder_lock(writable_dir(output.parent), "updating"):
        if output.exists() and not overwrite:
            raise ValueError(f"--output {output} exists; choose a new file or pass --overwrite")
        files = [f.path for f in expand_inputs(sources, allow_empty=True)]
        marked = read_feedback(feedback, "false_alarm") if feedback is not None else []
        other_model = sum(m.record.get("model") not in (None, own) for m in marked)
        if other_model:
            log.warning("%d of %d false alarm(s) in %s were marked on another model version; they are normal "
                        "images all the same", other_model, len(marked), feedback)
        new, skipped = read_new_images(files + [m.path for m in marked], loaded.input_spec, skip_bad_images)
        if not new:
            raise ValueError("no new images to update with: name image files or folders, or --feedback DIR")
        cfg = loaded.config
        into, held = holdout_split(len(new), holdout, cfg.seed)
        validation = calibration_set(loaded, normal_dir)
        score = loaded.default_score
        images = [im for _, _, im in new]
        before = score_images(loaded.scorer(), images, score)
        parts = UPDATERS[cfg.kind](cfg, loaded.parts, [images[i] for i in into],
                                   torch.Generator().manual_seed(cfg.seed))
        scorer = loaded.kind.build_scorer(cfg, parts)
        validation += [images[i] for i in held]
        # The kept cross-fitted scores stay: each came from a bank that never saw its image, as new images meet the
        # updated bank; only the validation images are scored again.
        cal: Calibration = calibrate(scorer, image_loader(validation, batch_size), cfg,
                                     crossfit=kept_crossfit(loaded.calibration))
        score_after = cal.resolve(cfg.score.default_score, loaded.kind.score_preference)
        after = score_images(scorer, images, score_after)
        added = [AddedImage(str(path), digest, "validation" if i in held else "bank", before[i], after[i])
                 for i, (path, digest, _) in enumerate(new)]
        threshold_before = loaded.calibration.scores[score].threshold if loaded.calibration else float("nan")
        threshold_after = cal.scores[score_after].threshold
        rule = loaded.calibration.threshold_rule if loaded.calibration else {}
        if rule:  # the defects it rested on are not in the file: the new threshold is the normal images' alone
            log.warning("the threshold of %s was set from defective images (%s); the update fits it on normal "
                        "images again (%.6g -> %.6g): run 'scgan calibrate --defects' on the new file to set it "
                        "from defects again", checkpoint, rule.get("defects", "calibrate --defects"),
                        threshold_before, threshold_after)
        rows = (_rows(loaded.parts), _rows(parts))
        n_cal = (loaded.calibration.n_images if loaded.calibration else 0, cal.n_images)
        changed = {"default_score": [score, score_after], "threshold": [threshold_before, threshold_after],
                   "parts_rows": list(rows), "calibration_images": list(n_cal)}
        step = lineage_step("update", checkpoint, own, changed,
                            [{"name": Path(a.name).name, "sha256": a.sha256, "role": a.role} for a in added])
        meta = {**loaded.meta, "update": run_info(updated_from=str(checkpoint), n_added=len(added),
                                                  n_bank=len(into), n_validation=len(held))}
        path = save_model(output, cfg, parts, cal, loaded.augmentation, meta, input_spec=loaded.input_spec,
                          calibration_images=validation, lineage=[*loaded.lineage, step])
    return UpdateResult(path, file_sha256(path), own, score, score_after, threshold_before, threshold_after, added,
                        n_cal, rows, skipped, time.perf_counter() - start)


def _rows(parts: dict[str, nn.Module]) -> int:
    """Rows of stored normal features (a memory bank's), 0 for parts without."""
    return sum(int(b.shape[0]) for m in parts.values() for n, b in m.named_buffers() if n == "bank")
