"""Fitting the PatchCore detector (kind patchcore) in one pass: the patch features of the normal training images,
a greedy coreset of them as the memory bank, the calibration on the validation split. No gradient step, no epoch,
no Lightning.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause
from scgan.config import Config
from scgan.data.datasets import AnomalyDataset, dataset_for, eval_loader, shape_batches
from scgan.data.io import InputSpec, is_grey
from scgan.inference.calibrate import calibrate
from scgan.models.patchcore.backbone import EfficientNetLite, block_plan, load_backbone, weights_digest
from scgan.models.patchcore.coreset import greedy_coreset, random_projection
from scgan.models.patchcore.kind import PATCHCORE, layout
from scgan.models.patchcore.model import FeatureLayout, MemoryBank, embed, whiten_, whitening_transform
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


def fit_patchcore(cfg: Config, output_dir: Path, resume: str | Path | None = None, progress: bool = True,
                  callbacks: list | None = None) -> TrainResult:
    """Fit a PatchCore detector into ``output_dir`` (claimed by :func:`scgan.training.fit.train`); it has no epoch
    to resume and no Lightning callback to call."""
    if callbacks:
        raise ValueError("a patchcore model is fitted in one pass, without Lightning: there is no callback to call")
    start = time.perf_counter()
    p = cfg.patchcore
    spec = PATCHCORE.input_spec(cfg)
    train_set = dataset_for(cfg.data, "train", dataclasses.replace(spec, channels=3))
    spec = resolve_channels(cfg, train_set)
    if spec.channels != train_set.spec.channels:
        train_set.convert(spec.channels)
    val_set = dataset_for(cfg.data, "val", spec)
    plan = block_plan(p.backbone)
    stride = plan[p.layers[0]].stride
    # Said whatever ``progress``, on stdout with the command's other results: what the run will do, before its
    # first (possibly long) step.
    print(f"fitting a PatchCore detector (preset {cfg.preset}: backbone {p.backbone}, blocks "
          f"{', '.join(map(str, p.layers))}) on {len(train_set)} normal images at {p.resolution} px on the short "
          f"side, {'grey' if spec.channels == 1 else 'RGB'}: features, then a memory bank of {p.bank_size} by "
          f"greedy coreset (no epochs); {len(val_set)} validation images calibrate it", flush=True)
    generator = torch.Generator().manual_seed(cfg.seed)
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
    whitening = None
    if p.metric == "mahalanobis":
        whitening = whitening_transform(patches, p.shrinkage)
        whiten_(patches, *whitening)
    size = min(p.bank_size, patches.shape[0])
    _say(progress, f"memory bank: choosing {size} of {patches.shape[0]} patch features ({total} in all) by "
                   "greedy coreset")
    bank = choose_bank(patches, p.bank_size, p.projection, generator,
                       progress=lambda k: k % 1024 == 0 and _say(progress, f"coreset: {k}/{size}"))
    del patches
    t2 = time.perf_counter()
    parts = {"memory": MemoryBank(bank, weights_digest(p.backbone), scale, whitening)}
    scorer = PATCHCORE.build_scorer(cfg, parts)
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


@torch.no_grad()  # not inference_mode: the patches are scaled in place afterwards
def collect_patches(backbone: EfficientNetLite, layout: FeatureLayout, batches: Iterable[torch.Tensor],
                    total: int, keep: int, generator: torch.Generator,
                    progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The patch features (N, D) of image batches (B, C, H, W), a seeded random subset of about ``keep`` of the
    ``total`` patches they hold (all of them when ``total`` <= ``keep``): memory stays bounded by ``keep``.

    ``progress(images)`` is called after each batch.
    """
    rate = min(1.0, keep / max(total, 1))
    kept: list[torch.Tensor] = []
    seen = 0
    for x in batches:
        f = torch.cat([embed(backbone, one, layout) for one in x.split(1)])  # one at a time: see PatchCoreScorer.run
        f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
        if rate < 1.0:
            f = f[torch.rand(f.shape[0], generator=generator) < rate]
        kept.append(f.float())
        seen += x.shape[0]
        if progress is not None:
            progress(seen)
    if not kept:
        raise ValueError("fitting needs at least one normal training image")
    return torch.cat(kept)


def layer_scale(patches: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """Per-channel weights (D,) under which each layer's features weigh the same in a distance: every channel of
    layer l gets 1 / sqrt(the layer's total variance over ``patches`` (N, D)), ``channels`` giving each layer's
    count. Two random normal patches then differ by about sqrt(2) per layer, whatever its width or magnitude."""
    scale = torch.empty(patches.shape[1])
    start = 0
    for c in channels:
        part = patches[:, start:start + c]
        scale[start:start + c] = 1.0 / float(part.var(dim=0).sum().clamp_min(1e-12)).__pow__(0.5)
        start += c
    return scale


def choose_bank(patches: torch.Tensor, size: int, projection: int, generator: torch.Generator,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The memory bank: ``size`` rows of ``patches`` (N, D) by greedy coreset on a random projection of them
    (``projection`` dims; 0 = none), starting at a seeded random row. All rows when N <= size."""
    if patches.shape[0] <= size:
        return patches.clone()
    start = int(torch.randint(patches.shape[0], (1,), generator=generator))
    index = greedy_coreset(random_projection(patches, projection, generator), size, start=start, progress=progress)
    return patches[index].clone()


def merge_bank(bank: torch.Tensor, new: torch.Tensor, size: int, projection: int, generator: torch.Generator,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """A bank of at most ``size`` rows covering both ``bank`` (M, D) and ``new`` rows (N, D), both already in the
    bank's space (:meth:`MemoryBank.project`): the greedy coreset of their union (:func:`choose_bank`), so that a
    new row far from every kept one is kept and memory stays bounded by ``size`` + N. The one merge behind a
    bounded streaming fit and behind updating a fitted bank with new normal images."""
    return choose_bank(torch.cat([bank.float(), new.float()]), size, projection, generator, progress=progress)
