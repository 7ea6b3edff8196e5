"""``scgan train --engine ray``: the patch features of the normal training images extracted on a Ray cluster (Ray
Data), feeding the same bounded streaming merge-reduce coreset the local fit uses.

The driver lists the images and draws the seeded order in which :func:`scgan.training.patchcore.merge_reduce` takes
them; Ray Data streams them, in that order, through a pool of actors that each hold a copy of the driver's backbone
(sent to them, so the workers need no weights file) and return each image's patch features (n, D) as float32. The
driver takes them batch by batch (never the whole set) into the merge-reduce, so the bank is the one a local fit
chooses. Every worker must reach the training images by the driver's paths (a shared file system); the validation
images are scored on the driver to calibrate. Ray is imported only through :mod:`scgan.inference.cluster`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from scgan.config import Config
from scgan.data.datasets import ImageStream
from scgan.data.io import image_to_tensor, is_grey
from scgan.inference.cluster import connect
from scgan.models.patchcore.backbone import EfficientNetLite
from scgan.models.patchcore.model import FeatureLayout
from scgan.training.patchcore import StreamedBank, feed_order, fit_patchcore, merge_reduce, patch_features
from scgan.training.result import TrainResult


@dataclasses.dataclass(frozen=True)
class RayEngine:
    """Where a fit runs its feature extraction: the Ray cluster at ``address`` ("auto", "HOST:PORT"), or a local one
    of ``workers`` CPUs when None; ``workers``: the extracting actors at most; ``batch_size``: images per batch."""

    address: str | None = None
    workers: int = 2
    batch_size: int = 4

    def join(self) -> None:
        """Join (or start) the cluster: one-line ImportError without Ray, ConnectionError where none answers."""
        connect(self.address, self.workers)


class ExtractFeatures:
    """A Ray Data actor: the patch features of batches of training images, read by their index in the stream."""

    def __init__(self, backbone: EfficientNetLite, layout: FeatureLayout, stream: ImageStream,
                 flips: list[tuple[int, ...]] | None = None) -> None:
        torch.set_num_threads(1)  # the one CPU Ray gives it (and convolutions round the same on every actor)
        self.backbone, self.layout, self.stream, self.flips = backbone, layout, copy.copy(stream), flips
        self.stream.skip_bad_images, self.stream.skipped = True, []  # an unreadable one comes back; the driver decides

    @torch.no_grad()
    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "rows": [], "grey": [], "features": []}
        for index in batch["index"]:
            image = self.stream.read(int(index))
            f = None if image is None else patch_features(self.backbone, self.layout, image_to_tensor(image)[None],
                                                          self.flips[int(index)] if self.flips else ())
            out["index"].append(int(index))
            out["rows"].append(-1 if f is None else f.shape[0])  # -1: unreadable
            out["grey"].append(f is not None and bool(is_grey(image)))
            out["features"].append(b"" if f is None else f.contiguous().numpy().tobytes())
        return out


def ray_stream_bank(backbone: EfficientNetLite, layout: FeatureLayout, stream: ImageStream, p, channels: list[int],
                    generator: torch.Generator, progress: Callable[[int, str], None] | None = None,
                    each: Callable[[int, torch.Tensor], None] | None = None,
                    flips: list[tuple[int, ...]] | None = None, *,
                    engine: RayEngine, actor: type = ExtractFeatures) -> StreamedBank:
    """:func:`scgan.training.patchcore.stream_bank` with the features extracted on ``engine``'s cluster: the same
    images in the same seeded order into the same merge-reduce, so the same bank. ``actor``: the extracting actor's
    class (:class:`ExtractFeatures` or a subclass)."""
    ray = connect(engine.address, engine.workers)
    # the order merge_reduce will draw, from a copy of the generator so that its own draw is unchanged
    order = feed_order(len(stream), torch.Generator().set_state(generator.get_state()))
    context = ray.data.DataContext.get_current()
    preserved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # batches come back in the order they were given
    try:
        ds = ray.data.from_items([{"index": i} for i in order]).map_batches(
            actor, batch_size=engine.batch_size, num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, engine.workers)),
            fn_constructor_kwargs={"backbone": backbone, "layout": layout, "stream": stream, "flips": flips})
        arriving = _rows(ds.iter_batches(batch_size=None, prefetch_batches=1))
        grey = True
        done = 0

        def features(index: int) -> torch.Tensor | None:
            nonlocal grey, done
            got, rows, is_grey_image, data = next(arriving, (None, 0, False, b""))
            if got != index:
                raise RuntimeError(f"the cluster returned image {got} where image {index} was due: its order was lost "
                                   "or an image was dropped")
            done += 1
            if progress is not None:
                progress(done, "features (ray)")
            if rows < 0:
                if stream.read(index) is not None:  # as a local fit: raises, or counts it skipped
                    raise FileNotFoundError(f"a Ray worker cannot read {stream.samples[index].path}, which the "
                                            "driver reads: every worker must reach the training images by the "
                                            "same path (a shared file system)")
                return None
            grey = grey and is_grey_image
            return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(rows, -1)

        fitted = merge_reduce(features, len(stream), p, channels, generator, each)
    finally:
        context.execution_options.preserve_order = preserved
    return dataclasses.replace(fitted, all_grey=grey)


def _rows(batches: Iterator[dict[str, Any]]) -> Iterator[tuple[int, int, bool, bytes]]:
    """(index, rows, grey, features) of each image, batch by batch as they arrive; one batch held at a time."""
    pending: deque = deque()
    for batch in batches:
        pending.extend(zip(batch["index"], batch["rows"], batch["grey"], batch["features"]))
        while pending:
            index, rows, grey, data = pending.popleft()
            yield int(index), int(rows), bool(grey), bytes(data)


def fit_patchcore_ray(cfg: Config, output_dir: Path, resume: str | Path | None = None, progress: bool = True,
                      callbacks: list | None = None, *, engine: RayEngine) -> TrainResult:
    """:func:`scgan.training.patchcore.fit_patchcore` with the training features extracted on ``engine``."""
    return fit_patchcore(cfg, output_dir, resume, progress, callbacks,
                         bank_from=functools.partial(ray_stream_bank, engine=engine))
