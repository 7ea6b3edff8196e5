"""Fitting a feature model (model.kind = patchcore) in one pass: features of the normal training images, a
coreset of them as the memory bank, the calibration on the validation split. No epoch, no Lightning.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scgan.calibration.fit import calibrate
from scgan.config import Config
from scgan.data.datasets import AnomalyDataset, dataset_for, eval_loader, shape_batches
from scgan.data.io import InputSpec, is_grey
from scgan.models.checks import NonFiniteModelError, nonfinite_cause
from scgan.models.patchcore.backbone import block_plan, load_backbone, weights_digest
from scgan.models.patchcore.fit import choose_bank, collect_patches, layer_scale
from scgan.models.patchcore.kind import layout
from scgan.models.patchcore.model import MemoryBank
from scgan.models.registry import get_kind
from scgan.training.result import TrainResult, write_run


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def resolve_channels(cfg: Config, train_set: AnomalyDataset) -> InputSpec:
    """The input spec with ``patchcore.channels = auto`` resolved: grey when every training image is grey."""
    spec = train_set.spec
    if cfg.patchcore.channels == "auto" and all(is_grey(im) for im in train_set.images):
        spec = dataclasses.replace(spec, channels=1)
    return spec


def patch_count(dataset: AnomalyDataset, stride: int) -> int:
    """Patches the dataset's images hold on a feature grid of ``stride`` pixels."""
    return sum((h // stride) * (w // stride) for h, w in (dataset.shape(i) for i in range(len(dataset))))


def fit_features(cfg: Config, output_dir: Path, progress: bool = True) -> TrainResult:
    """Fit a feature model into ``output_dir`` (claimed by :func:`scgan.training.fit.train`)."""
    start = time.perf_counter()
    p = cfg.patchcore
    spec = get_kind("patchcore").input_spec(cfg)
    train_set = dataset_for(cfg.data, "train", dataclasses.replace(spec, channels=3))
    spec = resolve_channels(cfg, train_set)
    if spec.channels != train_set.spec.channels:
        train_set.convert(spec.channels)
    val_set = dataset_for(cfg.data, "val", spec)
    plan = block_plan(p.backbone)
    stride = plan[p.layers[0]].stride
    # Said whatever ``progress``, on stdout with the command's other results: what the run will do, before its
    # first (possibly long) step.
    print(f"fitting a feature model (preset {cfg.preset}: backbone {p.backbone}, blocks "
          f"{', '.join(map(str, p.layers))}) on {len(train_set)} normal images at {p.resolution} px on the short "
          f"side, {'grey' if spec.channels == 1 else 'RGB'}: features, then a memory bank of {p.bank_size} by "
          f"greedy coreset (no epochs); {len(val_set)} validation images calibrate it", flush=True)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    backbone = load_backbone(p.backbone, max(p.layers))
    batch = cfg.runtime.eval_batch_size
    loader = DataLoader(train_set, batch_sampler=shape_batches(train_set, batch), num_workers=cfg.runtime.num_workers)
    total = patch_count(train_set, stride)
    step = max(1, len(train_set) // 10)
    t0 = time.perf_counter()
    patches = collect_patches(backbone, layout(cfg), (b["image"] for b in loader), total, p.max_patches, generator,
                              progress=lambda n: (n % step < batch or n == len(train_set))
                              and _say(progress, f"features: {n}/{len(train_set)} images"))
    t1 = time.perf_counter()
    scale = None
    if p.balance == "equal":
        scale = layer_scale(patches, [plan[i].channels for i in p.layers])
        patches *= scale
    size = min(p.bank_size, patches.shape[0])
    _say(progress, f"memory bank: choosing {size} of {patches.shape[0]} patch features ({total} in all) by "
                   "greedy coreset")
    bank = choose_bank(patches, p.bank_size, p.projection, generator,
                       progress=lambda k: k % 1024 == 0 and _say(progress, f"coreset: {k}/{size}"))
    del patches
    t2 = time.perf_counter()
    parts = {"memory": MemoryBank(bank, weights_digest(p.backbone), scale)}
    scorer = get_kind("patchcore").build_scorer(cfg, parts)
    calibration = calibrate(scorer, eval_loader(val_set, batch, cfg.runtime.num_workers), cfg)
    t3 = time.perf_counter()
    cause = nonfinite_cause(calibration, parts)
    if cause is not None:
        raise NonFiniteModelError(f"the fitted model is not finite ({cause}); nothing was written — check the data")
    wall = time.perf_counter() - start
    model_path = write_run(output_dir, cfg, parts, calibration, train_set, len(val_set), wall, input_spec=spec,
                           selection="the whole fit (no model selection)", n_patches=total, bank_size=size,
                           features_s=round(t1 - t0, 2), coreset_s=round(t2 - t1, 2), calibration_s=round(t3 - t2, 2))
    _say(progress, f"fitted in {wall:.0f} s (features {t1 - t0:.0f} s, coreset {t2 - t1:.0f} s, "
                   f"calibration {t3 - t2:.0f} s)")
    return TrainResult(output_dir, model_path, None, 0, wall)
