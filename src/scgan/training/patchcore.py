"""Fitting the PatchCore detector (kind patchcore) in one pass: the patch features of the normal training images,
streamed (each image decoded as it goes through the backbone, none held), a greedy coreset of them as the memory
bank chosen by merge-reduce in bounded memory, the calibration on the validation split. No gradient step, no
epoch, no Lightning.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause
from scgan.config import Config
from scgan.data.datasets import ImageStream, dataset_for, eval_loader, stream_for
from scgan.data.io import image_to_tensor, is_grey
from scgan.inference.calibrate import calibrate
from scgan.models.patchcore.backbone import EfficientNetLite, block_plan, load_backbone, weights_digest
from scgan.models.patchcore.coreset import MergeBuffer, greedy_coreset, projection_matrix
from scgan.models.patchcore.kind import PATCHCORE, layout
from scgan.models.patchcore.model import FeatureLayout, MemoryBank, embed, whiten_, whitening_transform
from scgan.models.scoring import scorer_sigma
from scgan.training.crossfit import FoldFeed, crossfit_distances, crossfit_scores, fold_position
from scgan.training.result import TrainResult, write_run
from scgan.training.self_map import SelfGrid, self_norm


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _time_left(start: float, done: int, total: int) -> str:
    """", about N s left" at the pace since ``start`` (perf_counter), or nothing once all ``total`` are done."""
    if done >= total or done <= 0:
        return ""
    return f", about {(time.perf_counter() - start) / done * (total - done):.0f} s left"


def fit_patchcore(cfg: Config, output_dir: Path, resume: str | Path | None = None, progress: bool = True,
                  callbacks: list | None = None, bank_from: Callable[..., StreamedBank] | None = None) -> TrainResult:
    """Fit a PatchCore detector into ``output_dir`` (claimed by :func:`scgan.training.fit.train`); it has no epoch
    to resume and no Lightning callback to call. ``bank_from``: what chooses the bank from the training stream, with
    :func:`stream_bank`'s arguments (:func:`stream_bank` itself by default; the Ray engine extracts on a cluster)."""
    if callbacks:
        raise ValueError("a patchcore model is fitted in one pass, without Lightning: there is no callback to call")
    start = time.perf_counter()
    p = cfg.patchcore
    spec = PATCHCORE.input_spec(cfg)
    stream = stream_for(cfg.data, "train", dataclasses.replace(spec, channels=3))
    # Said whatever ``progress``, on stdout with the command's other results: what the run will do, before its
    # first (possibly long) step.
    print(f"fitting a PatchCore detector (preset {cfg.preset}: backbone {p.backbone}, blocks "
          f"{', '.join(map(str, p.layers))}) on {len(stream)} normal images at {p.resolution} px on the short "
          f"side: features, then a memory bank of {p.bank_size} by streaming greedy coreset (no epochs); the "
          "validation images calibrate it", flush=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    backbone = load_backbone(p.backbone, max(p.layers))
    plan = block_plan(p.backbone)
    surface = (surface_share(backbone, layout(cfg), stream, cfg.seed) if "auto" in (p.flips, p.self_map)
               else None)  # measured once for both
    flips = bank_flips(cfg, stream, backbone, layout(cfg), surface)
    own = fuses_self_map(p.self_map, surface)
    if p.flips == "auto":
        _say_auto("patchcore.flips", surface, "each image enters the bank as it is or mirrored",
                  "the images enter the bank as they are")
    if p.self_map == "auto":
        _say_auto("patchcore.self_map", surface, "the map also judges each patch against its own image's median "
                  "patch", "the map is the distance map alone")
    step = max(1, len(stream) // 10)
    # The cross-fit's folds are fed by the same pass (their merges with a generator of their own: the bank stays
    # the same with or without them), and so are the self map's normal statistics.
    feed = (FoldFeed(cfg, len(stream), bank_merger(p, torch.Generator().manual_seed(cfg.seed)), output_dir)
            if cfg.score.threshold_source == "crossfit" or p.position_grid else None)
    grid = (SelfGrid(stream, plan[p.layers[0]].stride, scorer_sigma(cfg.score.sigma, p.resolution, None))
            if own else None)
    hooks = [h for h in (feed, grid) if h is not None]
    with feed or contextlib.nullcontext():  # the feed's file goes whatever happens
        t0 = time.perf_counter()
        fitted = (bank_from or stream_bank)(
            backbone, layout(cfg), stream, p, [plan[i].channels for i in p.layers], generator,
            progress=lambda n, what: (n % step == 0 or n == len(stream))
            and _say(progress, f"{what}: {n}/{len(stream)} images{_time_left(t0, n, len(stream))}"),
            each=(lambda index, patches: [h(index, patches) for h in hooks]) if hooks else None, flips=flips.views)
        bank, scale, whitening = fitted.bank, fitted.scale, fitted.whitening
        total, size = fitted.patches, fitted.bank.shape[0]
        t1 = time.perf_counter()
        features_s = t1 - t0 - fitted.coreset_s - (0.0 if feed is None else feed.merge_s)  # less the folds' merges
        if stream.skipped:
            warnings.warn(f"skipped {len(stream.skipped)} unreadable file(s) in the training images; first: "
                          f"{stream.skipped[0]}", UserWarning, stacklevel=2)
        if p.channels == "auto" and fitted.all_grey:  # a grey image's features are those of its grey in RGB
            spec = dataclasses.replace(spec, channels=1)
        val_set = dataset_for(cfg.data, "val", spec)
        _say(progress, f"memory bank: {size} of {total} patch features, {'grey' if spec.channels == 1 else 'RGB'}; "
                       f"{len(val_set)} validation images calibrate it")
        t2 = time.perf_counter()
        batch = cfg.runtime.eval_batch_size
        parts = {"memory": MemoryBank(bank, weights_digest(p.backbone), scale, whitening)}
        if grid is not None:  # before the scorer is built: its map fuses the self map
            normal_self = grid.stats()
            parts["memory"].set_self(*normal_self, grid.blur.sigma)
        scorer = PATCHCORE.build_scorer(cfg, parts)
        crossfit, crossfit_cost = None, {}
        if feed is not None:  # every training image's distances to a bank of the folds without it, from the pass above
            def say(n: int, what: str) -> None:
                if n % step == 0 or n == len(stream):
                    _say(progress, f"{what}: {n}/{len(stream)} images")

            fold = crossfit_distances(cfg, stream, feed, say)
            crossfit_cost.update(crossfit_folds=fold.k, crossfit_kept_mb=fold.kept_mb, crossfit_banks_s=fold.banks_s,
                                 crossfit_distances_s=round(fold.nearest_s, 2))
            _say(progress, f"cross-fitted {len(fold.distances)} training images in {fold.k} folds: fold banks "
                           f"{fold.banks_s:.0f} s, distances {fold.nearest_s:.0f} s (their patches, {fold.kept_mb:.0f} "
                           f"MB, were kept on disk in {output_dir} while fitting)")
            position = None
            if p.position_grid:  # map_z's normal maps by location, at the sigma every score is smoothed with
                position = fold_position(cfg, fold, scorer.sigma)
                parts["memory"].set_position(*position.stats(), scorer.sigma)

            if cfg.score.threshold_source == "crossfit":
                def crossfit(sigma: float, names: tuple[str, ...]):
                    done = crossfit_scores(cfg, fold, parts["memory"], sigma, position)
                    crossfit_cost.update(crossfit_scores_s=done.scoring_s)
                    return done.scores[:, [done.names.index(n) for n in names]]

        if grid is not None:  # the two maps' normal pixels, before the calibration measures the fused map
            parts["memory"].set_self(*normal_self, grid.blur.sigma,
                                     self_norm(scorer, eval_loader(val_set, batch, cfg.runtime.num_workers)))
        calibration = calibrate(scorer, eval_loader(val_set, batch, cfg.runtime.num_workers), cfg, crossfit=crossfit)
        t3 = time.perf_counter()
        cause = nonfinite_cause(calibration, parts)
        if cause is not None:
            raise NonFiniteModelError(f"the fitted model is not finite ({cause}); nothing was written — check the data")
        wall = time.perf_counter() - start
        model_path = write_run(output_dir, cfg, parts, calibration, stream, len(val_set), wall, input_spec=spec,
                               calibration_images=list(val_set.images), selection="the whole fit (no model selection)",
                               n_patches=total, bank_size=size, features_s=round(features_s, 2),
                               coreset_s=round(fitted.coreset_s, 2), calibration_s=round(t3 - t2, 2), **crossfit_cost,
                               **flips.facts(), map_self_fused=own)
        _say(progress, f"fitted in {wall:.0f} s (features {features_s:.0f} s, coreset "
                       f"{fitted.coreset_s:.0f} s, calibration {t3 - t2:.0f} s)")
        return TrainResult(output_dir, model_path, None, 0, wall)


def patch_features(backbone: EfficientNetLite, layout: FeatureLayout, x: torch.Tensor,
                   flip: tuple[int, ...] = ()) -> torch.Tensor:
    """The patch features (N, D) of an image batch (B, C, H, W), every patch of every image, float32. ``flip``: the
    image's dimensions (2: up-down, 3: left-right) mirrored before the backbone sees it, the features mirrored back
    to the image's own places (one of :data:`FLIPS`); within a few pixels, not exactly: the backbone's convolutions
    are not symmetric (studies/surface_proxy/flip_alignment.py)."""
    if flip:
        x = x.flip(flip)
    f = torch.cat([embed(backbone, one, layout) for one in x.split(1)])  # one at a time: see PatchCoreScorer.run
    if flip:
        f = f.flip(flip)
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float()


FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))  # as it is, left-right, up-down, both
SURFACE_SHARE = 0.5  # below this share of the features' variance explained by where a patch lies: a surface
SURFACE_SAMPLE = 16  # the training images that measure it
SURFACE_FEWEST = 8  # fewer readable ones tell nothing (a texture's share is about 1 / their count): an object


@dataclasses.dataclass
class SurfaceShare:
    """What :func:`surface_share` measured: the share, and on how many training images."""

    share: float | None  # None: fewer than two readable images, nothing measured
    images: int


@torch.no_grad()
def surface_share(backbone: EfficientNetLite, layout: FeatureLayout, stream: ImageStream, seed: int,
                  count: int = SURFACE_SAMPLE) -> SurfaceShare:
    """The share of the patch features' variance that where a patch lies explains, over ``count`` training images
    drawn by ``seed``: each image's features averaged in an 8 x 8 grid of cells (its aspect stretched to the square),
    the variance of the cells' means over the images against the variance of every cell of every image, averaged
    over the channels. Near 1 where every image shows the same thing in the same place (an object, aligned); small
    where any place looks like any other (a surface; about 1 / ``count`` for a texture without a place of its own).
    Unreadable images are passed over (and not counted as skipped: the fit's own pass counts them)."""
    stream = copy.copy(stream)
    stream.skipped = []
    cells = []
    for index in feed_order(len(stream), torch.Generator().manual_seed(seed)):  # the fit's first images
        if len(cells) == count:
            break
        image = stream.read(index)
        if image is not None:
            cells.append(F.adaptive_avg_pool2d(embed(backbone, image_to_tensor(image)[None], layout), 8)[0].float())
    if len(cells) < 2:
        return SurfaceShare(None, len(cells))
    c = torch.stack(cells)  # (n, D, 8, 8)
    where = c.mean(0).flatten(1).var(1, unbiased=False).mean()
    every = c.transpose(0, 1).flatten(1).var(1, unbiased=False).mean()
    return SurfaceShare(float(where / every) if every > 0 else 1.0, len(cells))  # flat images: nothing to mirror


@dataclasses.dataclass
class BankFlips:
    """How each training image enters the bank (``patchcore.flips``): one of :data:`FLIPS` per image, or None where
    they enter as they are; and :func:`surface_share`'s measurement, where ``flips`` or ``self_map`` is ``auto``
    (None otherwise)."""

    views: list[tuple[int, ...]] | None
    surface: SurfaceShare | None = None

    def facts(self) -> dict:
        """The decision, for the model's summary."""
        return {"bank_mirrored": self.views is not None,
                **({} if self.surface is None else {"bank_surface_images": self.surface.images}),
                **({} if self.surface is None or self.surface.share is None
                   else {"bank_surface_share": round(self.surface.share, 4)})}


def is_surface(surface: SurfaceShare | None) -> bool:
    """Whether :func:`surface_share`'s measurement calls the training images a surface: a share below
    :data:`SURFACE_SHARE`, on at least :data:`SURFACE_FEWEST` images (fewer tell nothing: an object)."""
    return (surface is not None and surface.images >= SURFACE_FEWEST and surface.share is not None
            and surface.share < SURFACE_SHARE)


def fuses_self_map(how: str, surface: SurfaceShare | None) -> bool:
    """Whether the map fuses the self map (``patchcore.self_map``): ``always``, or ``auto`` on a surface."""
    return how == "always" or (how == "auto" and is_surface(surface))


def bank_flips(cfg: Config, stream: ImageStream, backbone: EfficientNetLite, layout: FeatureLayout,
               surface: SurfaceShare | None = None) -> BankFlips:
    """How each training image enters the bank: as it is (``none``, or ``auto`` on an object or on fewer than
    :data:`SURFACE_FEWEST` readable images), or in one of :data:`FLIPS`, a quarter of the images each, drawn by
    ``cfg.seed`` (``always``, or ``auto`` on a surface). ``surface``: :func:`surface_share`'s measurement where the fit
    made it (``auto`` measures it otherwise); it is kept in the decision's facts either way."""
    how = cfg.patchcore.flips
    if how == "none":
        return BankFlips(None, surface)
    if how == "auto":
        surface = surface or surface_share(backbone, layout, stream, cfg.seed)
        if not is_surface(surface):
            return BankFlips(None, surface)
    codes = torch.randperm(len(stream), generator=torch.Generator().manual_seed(cfg.seed)) % len(FLIPS)
    return BankFlips([FLIPS[int(c)] for c in codes], surface)


def _say_auto(setting: str, surface: SurfaceShare | None, surface_then: str, object_then: str) -> None:
    """An ``auto`` setting's decision from :func:`surface_share`'s measurement, in one line on stdout (``setting``:
    its name; what follows on a surface and on an object)."""
    if surface is None:
        return
    if surface.images < SURFACE_FEWEST:
        print(f"{setting}=auto: {surface.images} readable training image(s) measured, fewer than {SURFACE_FEWEST} to "
              f"tell a surface from an object: {object_then}", flush=True)
        return
    yes = is_surface(surface)
    print(f"{setting}=auto: {'a surface' if yes else 'an object'} (where a patch lies explains {surface.share:.0%} of "
          f"its features' variance, on {surface.images} training images): {surface_then if yes else object_then}",
          flush=True)


@dataclasses.dataclass
class StreamedBank:
    """What :func:`stream_bank` chose: the bank (M, D) in its space, the map into that space, and facts."""

    bank: torch.Tensor
    scale: torch.Tensor | None  # (D,) per-channel weights (balance = equal), else None
    whitening: tuple[torch.Tensor, torch.Tensor] | None  # (mean (D,), W (D, D)) (metric = mahalanobis), else None
    patches: int  # every patch the images held
    sample_images: int  # the images whose patches estimated scale and whitening
    all_grey: bool  # every image read was grey (R = G = B)
    coreset_s: float  # seconds spent choosing (the merges), within the whole


@torch.no_grad()
def stream_bank(backbone: EfficientNetLite, layout: FeatureLayout, stream: ImageStream, p, channels: list[int],
                generator: torch.Generator, progress: Callable[[int, str], None] | None = None,
                each: Callable[[int, torch.Tensor], None] | None = None,
                flips: list[tuple[int, ...]] | None = None) -> StreamedBank:
    """The memory bank of every patch of ``stream``'s images, each decoded as it goes through the backbone
    (:func:`merge_reduce`, which also hands ``each`` every image's patches; ``p``: the patchcore section;
    ``channels``: each tapped layer's width; ``flips``: each image's mirroring, :func:`bank_flips`)."""
    grey = True
    done = 0

    def features(index: int) -> torch.Tensor | None:
        nonlocal grey, done
        image = stream.read(index)
        done += 1
        if progress is not None:
            progress(done, "features")
        if image is None:
            return None
        grey = grey and bool(is_grey(image))
        return patch_features(backbone, layout, image_to_tensor(image)[None], flips[index] if flips else ())

    fitted = merge_reduce(features, len(stream), p, channels, generator, each)
    return dataclasses.replace(fitted, all_grey=grey)


@torch.no_grad()
def merge_reduce(features: Callable[[int], torch.Tensor | None], count: int, p, channels: list[int],
                 generator: torch.Generator, each: Callable[[int, torch.Tensor], None] | None = None) -> StreamedBank:
    """The memory bank of the patches ``features(i)`` (n_i, D) gives for images i < ``count`` (None: unreadable,
    skipped), in memory bounded by ``p.max_patches`` rows however many come. ``each(i, patches)``, where given, gets
    every readable image's patches once they are in the bank's space (the sample's once it is fixed), not to be
    changed in place: the cross-fit's folds (:class:`scgan.training.crossfit.FoldFeed`) are fed by this same pass.

    1. A seeded random sample of whole images, in random order until their patches reach ``p.max_patches``, gives
       the space distances are measured in: the per-layer ``scale`` (balance = equal) and the Mahalanobis
       ``whitening`` (metric = mahalanobis), estimated from those patches as a fit of that many patches always
       did. A sample of images, not of patches, so that the space is fixed before any patch is chosen and every
       merge below chooses in the final space.
    2. Every patch, the sample's first, then each other image's as it comes, is brought into that space and joins
       a buffer; a full buffer (``p.max_patches`` rows) is merged into the bank by :func:`merge_bank` (the greedy
       coreset of bank and buffer, at most ``p.bank_size`` rows): a streaming merge-reduce, so a patch far from
       every kept one is kept wherever it comes. Where all patches fit in one buffer and are at most 4 x
       ``p.bank_size``, this is the greedy coreset of all of them, as a fit in memory chooses.
    """
    order = feed_order(count, generator)
    sample: list[torch.Tensor] = []
    sampled: list[int] = []
    rows = 0
    taken = 0
    for index in order:  # 1. the sample of whole images
        if rows >= p.max_patches:
            break
        taken += 1
        f = features(index)
        if f is not None:
            sample.append(f)
            sampled.append(index)
            rows += f.shape[0]
    if not sample:
        raise ValueError("fitting needs at least one readable normal training image")
    buffer = torch.cat(sample)
    sizes = [f.shape[0] for f in sample]
    del sample
    scale = layer_scale(buffer, channels) if p.balance == "equal" else None
    if scale is not None:
        buffer *= scale
    whitening = whitening_transform(buffer, p.shrinkage) if p.metric == "mahalanobis" else None
    if whitening is not None:
        whiten_(buffer, *whitening)
    total = buffer.shape[0]
    if each is not None:
        for index, patches in zip(sampled, buffer.split(sizes)):
            each(index, patches)
    merged = MergeBuffer(buffer.new_zeros((0, buffer.shape[1])), p.max_patches, bank_merger(p, generator))
    merged.add(buffer)  # 2. full buffers merged into the bank, each image's patches as they come
    del buffer
    for index in order[taken:]:
        f = features(index)
        if f is None:
            continue
        if scale is not None:
            f *= scale
        if whitening is not None:
            whiten_(f, *whitening)
        if each is not None:
            each(index, f)
        merged.add(f)
        total += f.shape[0]
    bank = merged.close()
    return StreamedBank(bank, scale, whitening, total, taken, True, merged.merge_s)


def feed_order(count: int, generator: torch.Generator) -> list[int]:
    """The seeded order in which :func:`merge_reduce` takes ``count`` images (its first draw from ``generator``)."""
    return torch.randperm(count, generator=generator).tolist()


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
        f = patch_features(backbone, layout, x)
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
    return _coreset_rows([patches], size, projection, generator, progress)


def bank_merger(p, generator: torch.Generator) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``merge(bank, new)``: :func:`merge_bank` with the patchcore section ``p``'s bank size and projection."""
    return lambda bank, new: merge_bank(bank, new, p.bank_size, p.projection, generator)


def merge_bank(bank: torch.Tensor, new: torch.Tensor, size: int, projection: int, generator: torch.Generator,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """A bank of at most ``size`` rows covering both ``bank`` (M, D) and ``new`` rows (N, D), both already in the
    bank's space (:meth:`MemoryBank.project`). The one merge behind the streaming fit (:func:`stream_bank`), the
    cross-fitted folds and updating a fitted bank with new normal images.

    While the bank has room (fewer than ``size`` rows, as at the first merge) it is the greedy coreset of the union
    (:func:`choose_bank`); where the union holds more than 4 x ``size`` rows, the greedy coreset of the bank and a
    seeded random sample of the new rows making 4 x ``size`` fills it, and every new row is then merged into it as
    below (one greedy pass per chosen row over 4 x ``size`` rows, not over a whole first buffer).

    A full bank merges as streaming k-center does (Charikar et al., STOC 1997): its radius r is the smallest
    distance between two of its rows (for a greedy coreset, the distance at which its last row was chosen, so every
    row it was chosen from lies within r of it). New rows within r of the bank are covered at the bank's own
    resolution and are not candidates; of the others, greedy takes the farthest from the bank and the rows taken so
    far while that distance exceeds r (at most ``size``); the bank is then the greedy coreset of the old bank and
    those rows. A new row far from every kept one is therefore always a candidate, and the cost is one distance
    product of the new rows with the bank (N x M x ``projection``), not a greedy pass over all N rows per chosen
    row. Distances are measured on one fixed random projection of all rows (:func:`coreset_projection`;
    ``projection`` dims, 0 = none); beyond the inputs, memory holds the projected bank and candidates and blocks of
    2,048 rows' distances to the bank.
    """
    if bank.shape[0] != size or bank.shape[0] + new.shape[0] <= size:  # room left (or a bank over size: reduced)
        take = _FIRST_SAMPLE * size - bank.shape[0]
        if bank.shape[0] > size or new.shape[0] <= take:
            return _coreset_rows([bank, new], size, projection, generator, progress)
        # a large first merge: the greedy coreset of the bank and a seeded sample of the new rows fills the bank, and
        # all new rows are then merged into it as into any full bank (the sample's rows lie within its radius)
        sample = torch.randperm(new.shape[0], generator=generator)[:take].sort().values
        bank = _coreset_rows([bank, new[sample]], size, projection, generator, progress)
    bank, new = bank.float(), new.float()
    dims = bank.shape[1]
    matrix = coreset_projection(dims, projection)
    start = int(torch.randint(bank.shape[0], (1,), generator=generator))
    kept = bank @ matrix if matrix is not None else bank
    kept_sq = kept.pow(2).sum(1)
    # the bank's radius: its smallest distance between two rows, a block of rows at a time; distances within float
    # rounding of it (|a|^2 + |b|^2 - 2 a.b loses about 1e-6 of |a|^2) count as inside, so a copy is never new
    radius_sq = float("inf")
    for first in range(0, kept.shape[0], _MERGE_CHUNK):
        block = torch.addmm(kept_sq.unsqueeze(0), kept[first:first + _MERGE_CHUNK], kept.t(), alpha=-2.0)
        block.add_(kept_sq[first:first + _MERGE_CHUNK].unsqueeze(1))
        block[torch.arange(block.shape[0]), torch.arange(first, first + block.shape[0])] = float("inf")
        radius_sq = min(radius_sq, float(block.amin()))
    radius_sq = max(radius_sq, 0.0) + 1e-5 * float(kept_sq.max())
    nearest, rows, candidates = [], [], []
    for first in range(0, new.shape[0], _MERGE_CHUNK):  # the new rows' squared distance to the bank, by blocks
        part = new[first:first + _MERGE_CHUNK]
        part = part @ matrix if matrix is not None else part
        d = torch.addmm(kept_sq.unsqueeze(0), part, kept.t(), alpha=-2.0).amin(1).add_(part.pow(2).sum(1))
        outside = d > radius_sq
        nearest.append(d[outside])
        rows.append(outside.nonzero().squeeze(1) + first)
        candidates.append(part[outside])
    nearest, rows, candidates = torch.cat(nearest), torch.cat(rows), torch.cat(candidates)
    if rows.numel() == 0:
        return bank.clone()
    picks = _farthest_first(candidates, nearest, radius_sq, size)
    union = torch.cat([kept, candidates[picks]])
    index = greedy_coreset(union, size, start=start, progress=progress)
    out = torch.empty(index.shape[0], dims)
    old = index < bank.shape[0]
    out[old] = bank[index[old]]
    out[~old] = new[rows[picks[index[~old] - bank.shape[0]]]]
    return out


# A bank with room filled from more than this many times its size of new rows is filled from a sample of that many
# (see merge_bank): a greedy pass over every row of a first buffer cost a pass per chosen row.
_FIRST_SAMPLE = 4
_MERGE_CHUNK = 2048  # rows per distance product in merge_bank: 2,048 x a 4,096-row bank is 32 MB of float32


@functools.lru_cache(maxsize=8)
def coreset_projection(dims: int, projection: int) -> torch.Tensor | None:
    """The random projection (dims, projection) every coreset and merge measures distances on: one fixed seeded
    matrix, the same for every merge of a stream, so that a bank's radius means the same in each (a radius measured
    on another projection is off by that projection's distortion, and the smallest distance most of all); the
    fit's seed varies the coreset by its starting row. None where ``projection`` is 0 or >= ``dims`` (none)."""
    if not 0 < projection < dims:
        return None
    return projection_matrix(dims, projection, torch.Generator().manual_seed(_PROJECTION_SEED))


_PROJECTION_SEED = 20_220_619  # any fixed number: the projection is a part of the method, not of the fit's seed


def _farthest_first(x: torch.Tensor, nearest_sq: torch.Tensor, radius_sq: float, limit: int) -> torch.Tensor:
    """Indices of rows of ``x`` (N, D) taken greedily, each the farthest from what was there (``nearest_sq``: each
    row's squared distance to it) and from the rows taken before, while that distance exceeds ``radius_sq``; at
    most ``limit``. Ties go to the lowest index."""
    nearest = nearest_sq.clone()
    x_sq = x.pow(2).sum(1)
    chosen: list[int] = []
    while len(chosen) < limit:
        i = int(torch.argmax(nearest))
        if float(nearest[i]) <= radius_sq:
            break
        chosen.append(i)
        torch.minimum(nearest, torch.addmv(x_sq, x, x[i], alpha=-2.0).add_(x_sq[i]), out=nearest)
    return torch.tensor(chosen, dtype=torch.int64)


def _coreset_rows(parts: list[torch.Tensor], size: int, projection: int, generator: torch.Generator,
                  progress: Callable[[int], None] | None) -> torch.Tensor:
    """``size`` rows of the union of ``parts`` (each (n_i, D)) by greedy coreset on one random projection of them,
    from a seeded random row; all rows, as a new tensor, when the union holds no more than ``size``."""
    parts = [part.float() for part in parts if part.shape[0] > 0]
    count = sum(part.shape[0] for part in parts)
    if count <= size:
        return torch.cat(parts).clone() if len(parts) == 1 else torch.cat(parts)
    start = int(torch.randint(count, (1,), generator=generator))
    matrix = coreset_projection(parts[0].shape[1], projection)  # one projection for every part
    projected = torch.cat([part @ matrix for part in parts]) if matrix is not None else torch.cat(parts)
    dims = parts[0].shape[1]
    index = greedy_coreset(projected, size, start=start, progress=progress)
    del projected
    out = torch.empty(index.shape[0], dims)
    offset = 0
    for part in parts:
        inside = (index >= offset) & (index < offset + part.shape[0])
        out[inside] = part[index[inside] - offset]
        offset += part.shape[0]
    return out
