"""``scgan.Detector``: score images from Python, with a torch model file or an ONNX file alike.

    det = scgan.Detector.load("runs/bottle/model.pt")   # or "model.onnx": onnxruntime, no torch import
    r = det.predict("new.png")                           # a path, PIL image, numpy array, bytes, or a list
    r.score, r.decision, r.heat.shape, r.overlay().save("new_overlay.png")

Every input is read into uint8 RGB at its own resolution (a larger one reduced to ``max_side`` so that
memory is bounded), brought to the model's input exactly as ``scgan test`` reads files (S x S for an SCGAN;
the aspect kept at the working resolution for the PatchCore detector; grey or RGB), scored in batches of one shape,
and its anomaly map brought back to the image's resolution. With ``tile`` a large image is not reduced but
scored in overlapping tiles of that many pixels, each at the working resolution: the network's memory is
bounded by the tile, and a small defect keeps its pixels. Nothing here imports torch unless a torch model is
loaded.
"""
from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
from PIL import Image

from scgan import __version__
from scgan.calibration.stats import Calibration, exceeds
from scgan.data.io import (
    FORMAT_NAMES,
    OPENED_FORMATS,
    InputSpec,
    image_to_array,
    load_image_with_size,
    pil_to_rgb,
    prepare_image,
    reduce_image,
    resize_map,
)
from scgan.inference.tiling import POSITIONAL_SCORES, check_tile, check_tile_count, tile_origins
from scgan.utils.errors import one_line
from scgan.utils.limits import BATCH_SIZE, MAX_SIDE_RANGE
from scgan.utils.tables import decision_label, is_missing

# What predict() takes per image: a file path, encoded file bytes, a PIL image, or an (H, W) / (H, W, C) array.
ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

log = logging.getLogger(__name__)

MAX_SIDE = 2048  # inputs with a longer side are reduced by an integer factor before anything else
DEFAULT_BATCH_SIZE = 16


class InputError(ValueError):
    """An input that is not an image predict() can read (wrong type, shape, dtype or value range)."""


def _rgb_from_array(a: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) uint8/uint16/bool/float-in-[0, 1] array -> uint8 (H, W, 3), as a file would read."""
    if a.dtype.byteorder not in ("=", "|"):  # big-endian data (from a file or another machine): same values, native
        a = a.astype(a.dtype.newbyteorder("="))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise InputError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.rint(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("the image array contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"a float image array must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                             "divide 0..255 values by 255, or pass a uint8 array")
        a = np.rint(a * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputError(f"an image array must be uint8, uint16, bool or float in [0, 1], got dtype {a.dtype}")
    return pil_to_rgb(Image.fromarray(np.ascontiguousarray(a)))  # alpha composited on black, like files


def read_input(x: ImageInput, max_side: int | None = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int], str | None]:
    """One input -> (uint8 RGB (H, W, 3), the input's own (H, W), its path or None).

    An image whose longer side exceeds ``max_side`` comes back reduced by an integer factor (the
    returned array is what is scored and shown; the second item is still the input's size); None keeps every
    pixel (tiled scoring; the decoder's pixel limit still holds).
    Raises :class:`scgan.data.io.ImageReadError` for unreadable files, :class:`InputError` for bad arrays.
    """
    if isinstance(x, (str, os.PathLike)):
        rgb, size = load_image_with_size(x, None, max_side=max_side)
        return rgb, size, os.fspath(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        rgb, size = load_image_with_size(io.BytesIO(bytes(x)), None, max_side=max_side)
        return rgb, size, None
    if isinstance(x, Image.Image):
        if x.format is not None and x.format not in OPENED_FORMATS:  # its pixels may not be decoded yet
            raise InputError(f"a PIL image opened from a {x.format} file is not scored (only {FORMAT_NAMES}); "
                             "convert it to pixels yourself first, e.g. image.convert('RGB')")
        return pil_to_rgb(reduce_image(x, max_side)), (x.height, x.width), None
    if isinstance(x, np.ndarray):
        size = (int(x.shape[0]), int(x.shape[1])) if x.ndim >= 2 else (0, 0)
        rgb = _rgb_from_array(x)
        if max_side is not None and max(rgb.shape[:2]) > max_side:
            rgb = np.asarray(reduce_image(Image.fromarray(rgb), max_side))
        return rgb, size, None
    raise InputError(f"cannot score a {type(x).__name__}: give a file path, file bytes, a PIL image or a numpy array")


@dataclass
class Result:
    """One scored image: every named score, the decision, and the heat map at the image's own resolution."""

    scores: dict[str, float]  # every score the model computes, by name
    score_name: str  # the model's default score, which drives the decision
    normalized: float | None  # the default score min-max normalised on normal validation images (about [0, 1])
    threshold: float | None  # the decision threshold, in the default score's units (None: no calibration)
    image: np.ndarray = field(repr=False)  # uint8 (H, W, 3) as scored (reduced if larger than max_side)
    original_size: tuple[int, int]  # the input's (H, W)
    source: str | None = None  # the input's path, when it was one
    anomaly_map: np.ndarray = field(default=None, repr=False)  # float32, the model's raw map (its input's size)
    calibration: Calibration | None = field(default=None, repr=False)  # scales the map for display

    @property
    def score(self) -> float:
        """The default score (raw units; compare with ``threshold``)."""
        return self.scores[self.score_name]

    @property
    def anomalous(self) -> bool | None:
        """True when the default score exceeds the threshold or is not finite (nan never passes as normal); None
        without a calibration."""
        return None if self.threshold is None else bool(exceeds(self.score, self.threshold))

    @property
    def decision(self) -> str | None:
        """"anomalous", "normal", or None without a calibration."""
        return None if self.anomalous is None else decision_label(self.anomalous)

    @cached_property
    def heat(self) -> np.ndarray:
        """float32 (H, W) in [0, 1] at ``image``'s resolution, the anomaly map on the calibration's colour scale
        (:meth:`Calibration.heat`: normal pixels blue, the map's threshold green)."""
        amap = resize_map(self.anomaly_map, self.image.shape[:2])
        if self.calibration is not None:
            return self.calibration.heat(amap)
        return np.clip(amap / max(float(amap.max()), 1e-12), 0.0, 1.0)  # nothing to scale by: its own maximum

    def overlay(self, alpha: float = 0.7) -> Image.Image:
        """The paper's picture: the "jet" heat map (blue normal, green the threshold, red beyond) blended
        ``alpha`` : ``1 - alpha`` over the image."""
        from scgan.reporting.visualize import overlay

        return Image.fromarray(overlay(self.image, self.heat, alpha=alpha))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays); a value that is nan or infinite is None (strict JSON has no nan)."""
        h, w = self.original_size
        return {"scores": {k: _finite_or_none(v) for k, v in self.scores.items()}, "score_name": self.score_name,
                "score": _finite_or_none(self.score), "normalized": _finite_or_none(self.normalized),
                "threshold": _finite_or_none(self.threshold), "decision": self.decision, "width": w, "height": h}


@dataclass
class Outcome:
    """What :meth:`Detector.iter_predict` yields per input: a result, or why the input was skipped."""

    index: int
    result: Result | None
    error: str | None = None


ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B, C, H, W) -> ((B, K), (B, H, W))


class Detector:
    """A trained model ready to score images; build it with :meth:`load` (``.pt``/``.ckpt`` or ``.onnx``)."""

    def __init__(self, score_fn: ScoreFn, *, spec: InputSpec | int, score_names: Sequence[str], default_score: str,
                 calibration: Calibration | None, backend: str, path: Path | None = None,
                 info: dict[str, Any] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_side: int = MAX_SIDE, tile: int | None = None) -> None:
        if default_score not in score_names:
            raise ValueError(f"default score {default_score!r} is not one of the model's scores {list(score_names)}")
        self._score = score_fn
        self.spec = InputSpec.of(spec)
        self.score_names = tuple(score_names)
        self.default_score = default_score
        self.calibration = calibration
        self.backend = backend
        self.path = path
        self.info = dict(info or {})  # version, preset, config, training facts: what GET /model shows
        self.batch_size = BATCH_SIZE.check("batch_size", batch_size)
        self.max_side = MAX_SIDE_RANGE.check("max_side", max_side)
        self.tile = None if tile is None else check_tile(tile, self.spec.size)
        if self.tile is not None and default_score in POSITIONAL_SCORES:
            log.warning("%s judges each place of an image against how normal images run there; in tiles, each tile "
                        "is judged as if it were a whole image (not measured)%s", default_score,
                        ": map_max does not depend on the place" if default_score == "map_z" else "")
        # Called (tiles done, tiles of the image, seconds so far) after each batch of tiles; see TileProgress.
        self.tile_progress: Callable[[int, int, float], None] | None = None

    @property
    def image_size(self) -> int:
        """The model's input size: S, or the short side of the working resolution where the aspect is kept."""
        return self.spec.size

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str | None = None, **kwargs: Any) -> Detector:
        """A detector from a model file or an ``.onnx`` file (onnxruntime, no torch).

        ``backend``: "auto" (None; ONNX Runtime on the model's cached exported graph where its kind scores faster
        there, else torch), "torch" or "onnx" (:mod:`scgan.inference.backend`); ``kwargs`` go to the constructor
        (``batch_size``, ``max_side``, ``tile``).
        """
        from scgan.inference.backend import choose_backend

        choice = choose_backend(path, backend or "auto")
        if choice.backend == "onnx":
            detector = cls.from_onnx(choice.path, **kwargs)
            detector.path = choice.model_path  # what the user named, not the cache file
            return detector
        from scgan.artifacts.model_file import load_model

        return cls.from_model(choice.loaded or load_model(choice.path), **kwargs)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, providers: list[str] | None = None, **kwargs: Any) -> Detector:
        """A detector on an ONNX file written by ``scgan export`` (onnxruntime and numpy only)."""
        from scgan.artifacts.onnx_file import OnnxScorer

        runner = OnnxScorer(path, providers=providers)
        cfg = runner.config
        info = {"version": __version__, "exported_by": runner.version, "preset": cfg.get("preset"),
                "kind": cfg.get("kind"), "config": cfg,
                "train_info": _json_meta(runner.metadata.get("scgan.train_info"))}
        return cls(runner.run, spec=runner.spec, score_names=runner.score_names,
                   default_score=runner.default_score, calibration=runner.calibration, backend="onnx",
                   path=runner.path, info=info, **kwargs)

    @classmethod
    def from_model(cls, loaded, **kwargs: Any) -> Detector:
        """A detector on a :class:`scgan.artifacts.model_file.LoadedModel` (torch, CPU, inference mode)."""
        import torch

        scorer = loaded.scorer().eval()
        names = tuple(scorer.names)

        def score_fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                s, m = scorer.run(torch.from_numpy(x))
            return s.float().numpy(), m.float().numpy()

        cfg = loaded.config.to_dict()
        info = {"version": __version__, "preset": cfg.get("preset"), "kind": cfg.get("kind"),
                "config": cfg, "train_info": dict(loaded.meta)}
        return cls(score_fn, spec=loaded.input_spec, score_names=names,
                   default_score=loaded.default_score, calibration=loaded.calibration, backend="torch",
                   path=loaded.path, info=info, **kwargs)

    # ---- scoring ------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The decision threshold of the default score (raw units); None without a calibration."""
        return None if self.calibration is None else float(self.calibration.scores[self.default_score].threshold)

    @property
    def threshold_normalized(self) -> float | None:
        """The threshold on the normalised scale (None without a calibration)."""
        return None if self.calibration is None else self.calibration.threshold_normalized(self.default_score)

    def normalize(self, value: float) -> float | None:
        """A raw default-score value normalised like :attr:`Result.normalized` (None without a calibration)."""
        if self.calibration is None:
            return None
        return float(self.calibration.normalize(self.default_score, np.array([value]))[0])

    def predict(self, x: ImageInput | list[ImageInput], batch_size: int | None = None) -> Result | list[Result]:
        """Score one input (-> a Result) or a list of them (-> a list, in order); a bad input raises."""
        items = list(x) if isinstance(x, (list, tuple)) else [x]
        results: list[Result] = []
        for out in self.iter_predict(items, batch_size, skip_errors=False):
            results.append(out.result)
        return results if isinstance(x, (list, tuple)) else results[0]

    def iter_predict(self, items: Iterable[ImageInput], batch_size: int | None = None,
                     skip_errors: bool = True) -> Iterator[Outcome]:
        """Score inputs in batches, yielding one Outcome per input in order; at most one batch is held.

        With ``skip_errors`` an input that cannot be read yields an Outcome with its ``error`` (one
        line) and the others are scored; without it the first such input raises.
        """
        size = batch_size or self.batch_size
        batch: list[tuple[int, np.ndarray, tuple[int, int], str | None]] = []
        failed: list[Outcome] = []  # inputs that failed while a batch was filling: yielded with it, in order
        for i, x in enumerate(items):
            try:
                rgb, orig, source = read_input(x, self.max_side if self.tile is None else None)
            except (ValueError, OSError) as e:  # ImageReadError and InputError are ValueErrors
                if not skip_errors:
                    raise
                outcome = Outcome(i, None, one_line(e))
                if batch:
                    failed.append(outcome)
                else:
                    yield outcome
                continue
            if self.tile is not None:  # before any scoring: an image of too many tiles stops the run at once
                check_tile_count(*rgb.shape[:2], self.tile)
            batch.append((i, rgb, orig, source))
            if len(batch) == size:
                yield from sorted(self._score_batch(batch) + failed, key=lambda o: o.index)
                batch, failed = [], []
        if batch:
            yield from sorted(self._score_batch(batch) + failed, key=lambda o: o.index)

    def _score_arrays(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Scores (N, K) and maps (each at its prepared shape) of uint8 RGB images, in batches of one shape."""
        prepared = [prepare_image(rgb, self.spec) for rgb in images]
        scores = np.zeros((len(prepared), len(self.score_names)), dtype=np.float32)
        maps: list[np.ndarray] = [np.zeros(0, np.float32)] * len(prepared)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(prepared):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            for k in range(0, len(idx), self.batch_size):
                part = idx[k:k + self.batch_size]
                x = image_to_array(np.stack([prepared[i] for i in part]))
                s, m = self._score(np.ascontiguousarray(x, dtype=np.float32))
                for j, i in enumerate(part):
                    scores[i], maps[i] = s[j], np.asarray(m[j], dtype=np.float32)
        return scores, maps

    def _score_tiled(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image scored in overlapping tiles: each score its maximum over the tiles, the map (at the image's
        resolution) their mean where they overlap."""
        h, w = rgb.shape[:2]
        t = self.tile
        boxes = [(y, x) for y in tile_origins(h, t) for x in tile_origins(w, t)]
        total = np.zeros((h, w), dtype=np.float32)
        count = np.zeros((h, w), dtype=np.float32)
        best = None
        start = time.monotonic()
        for k in range(0, len(boxes), self.batch_size):
            part = boxes[k:k + self.batch_size]
            scores, maps = self._score_arrays([rgb[y:y + t, x:x + t] for y, x in part])
            best = scores.max(0) if best is None else np.maximum(best, scores.max(0))
            for (y, x), m in zip(part, maps):
                th, tw = min(t, h - y), min(t, w - x)
                total[y:y + th, x:x + tw] += resize_map(m, (th, tw))
                count[y:y + th, x:x + tw] += 1.0
            if self.tile_progress is not None:
                self.tile_progress(k + len(part), len(boxes), time.monotonic() - start)
        return best, total / count

    def _score_batch(self, batch: list[tuple[int, np.ndarray, tuple[int, int], str | None]]) -> list[Outcome]:
        if self.tile is None:
            scores, maps = self._score_arrays([rgb for _, rgb, _, _ in batch])
        else:
            tiled = [self._score_tiled(rgb) for _, rgb, _, _ in batch]
            scores, maps = np.stack([s for s, _ in tiled]), [m for _, m in tiled]
        default = self.score_names.index(self.default_score)
        out = []
        for k, (i, rgb, orig, source) in enumerate(batch):
            named = {n: float(v) for n, v in zip(self.score_names, scores[k])}
            out.append(Outcome(i, Result(
                scores=named, score_name=self.default_score,
                normalized=self.normalize(float(scores[k, default])), threshold=self.threshold,
                image=rgb, original_size=orig, source=source, anomaly_map=maps[k], calibration=self.calibration)))
        return out

    def describe(self) -> dict[str, Any]:
        """What the model is: version, preset, image size, scores, default score, calibration summary."""
        cal = self.calibration
        summary = None
        if cal is not None:
            summary = {"n_images": cal.n_images, "quantile": cal.quantile, "selected_score": cal.selected_score,
                       "threshold": self.threshold, "threshold_normalized": self.threshold_normalized,
                       "selection_auroc": dict(cal.selection), "heat_legend": cal.heat_legend()}
        return {"version": self.info.get("version"), "preset": self.info.get("preset"), "kind": self.info.get("kind"),
                "backend": self.backend,
                "image_size": self.image_size, "input": self.spec.to_dict(), "tile": self.tile,
                "score_names": list(self.score_names),
                "default_score": self.default_score, "calibration": summary,
                "model_file": None if self.path is None else self.path.name}


def load_detector(path: str | os.PathLike, backend: str | None = None, tries: int = 3, onnx: bool = False,
                  **kwargs: Any) -> Detector:
    """``Detector.load(path, backend=backend, **kwargs)`` (``onnx``: ``Detector.from_onnx(path, **kwargs)``, an
    ONNX file whatever its name) with the sha256 of the bytes it loaded in ``detector.info["sha256"]`` (what GET
    /model shows and the results store records as the model's version): the file is hashed before and after
    loading, and loaded again when it was replaced meanwhile."""
    from scgan.utils.manifest import file_sha256

    def load() -> Detector:
        return Detector.from_onnx(path, **kwargs) if onnx else Detector.load(path, backend=backend, **kwargs)

    if not Path(path).is_file():  # missing, a folder, a FIFO: the loader's own error, never a hash that waits
        return load()
    for _ in range(tries):
        before = file_sha256(path)
        detector = load()
        if file_sha256(path) == before:
            detector.info["sha256"] = before
            return detector
    raise RuntimeError(f"{path} changed while it was being loaded, {tries} times; use it once it is written")


def _finite_or_none(x: float | None) -> float | None:
    """``x``, or None where it is None, nan or infinite."""
    return None if is_missing(x) else float(x)


def _json_meta(text: str | None) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

