"""``scgan predict``: score image files with a trained model; CSV of scores and decisions, overlay PNGs."""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scgan.calibration.stats import Calibration
from scgan.data.io import IMAGE_EXTENSIONS, ImageReadError, image_to_array, load_image, resize_image
from scgan.utils.atomic import atomic_write_text, writable_dir

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One scored image."""

    path: str
    scores: dict[str, float]
    normalized: float | None
    anomalous: bool | None
    overlay: str | None = None


@dataclass
class PredictOutput:
    predictions: list[Prediction]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    csv_path: Path | None = None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for images (sorted). Missing paths raise."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not out:
        raise ValueError("no images to score: the inputs hold no image files")
    return out


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_predict(inputs: Iterable[str | Path], output_dir: str | Path, *, model=None, onnx_path: str | None = None,
                image_size: int | None = None, batch_size: int = 16, overlays: bool = True,
                progress: bool = True) -> PredictOutput:
    """Score every readable image; unreadable files are reported and skipped, never fatal.

    Exactly one of ``model`` (a LoadedModel or path) and ``onnx_path`` is used; with ``onnx_path``
    nothing here imports torch (onnxruntime and numpy only).
    """
    from scgan.visualize import overlay as make_overlay
    from scgan.visualize import resize_map, save_png

    if onnx_path is not None:
        from scgan.onnx_runtime import OnnxScorer

        runner = OnnxScorer(onnx_path)
        score_fn, calibration, size, default = runner.run, runner.calibration, runner.image_size, runner.default_score
        names = runner.score_names
    else:
        import torch

        from scgan.checkpoint import LoadedModel, load_model

        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        scorer = loaded.scorer()

        @torch.inference_mode()
        def score_fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            s, m = scorer.run(torch.from_numpy(x))
            return s.numpy(), m.numpy()

        calibration: Calibration | None = loaded.calibration
        size, default = loaded.config.model.image_size, loaded.default_score
        names = scorer.names
    size = image_size or size
    files = expand_inputs(inputs)
    out = writable_dir(output_dir)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    preds: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="predict", leave=False)
    for chunk in _batches(files, batch_size):
        originals, tensors, good = [], [], []
        for f in chunk:
            try:
                img = load_image(f, None)
                arr = image_to_array(resize_image(img, size))
            except Exception as e:  # noqa: BLE001 — one bad file never stops the others; the CSV says why
                reason = str(e) if isinstance(e, (ImageReadError, OSError)) else f"{type(e).__name__}: {e}"
                skipped.append((str(f), reason))
                log.warning("skipped %s: %s", f, reason)
                continue
            originals.append(img)
            tensors.append(arr)
            good.append(f)
        if bar:
            bar.update(len(chunk))
        if not good:
            continue
        scores, maps = score_fn(np.stack(tensors).astype(np.float32))
        for i, f in enumerate(good):
            named = {n: float(v) for n, v in zip(names, scores[i])}
            norm = dec = None
            if calibration is not None:
                norm = float(calibration.normalize(default, np.array([named[default]]))[0])
                dec = bool(calibration.decide(default, np.array([named[default]]))[0])
            ov_path = None
            if overlays:
                h, w = originals[i].shape[:2]
                heat = calibration.heat(maps[i]) if calibration else maps[i] / max(float(maps[i].max()), 1e-12)
                ov_path = out / "overlays" / f"{len(preds):05d}_{f.stem}.png"
                save_png(ov_path, make_overlay(originals[i], resize_map(heat, (h, w))))
            preds.append(Prediction(str(f), named, norm, dec, str(ov_path) if ov_path else None))
    if bar:
        bar.close()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "score", "score_normalized", "decision", *names, "overlay"])
    for p in preds:
        decision = "" if p.anomalous is None else ("anomalous" if p.anomalous else "normal")
        norm = "" if p.normalized is None else f"{p.normalized:.6g}"
        w.writerow([p.path, f"{p.scores[default]:.6g}", norm, decision,
                    *(f"{p.scores[n]:.6g}" for n in names), p.overlay or ""])
    for path, reason in skipped:
        w.writerow([path, "", "", "error: " + reason.replace("\n", " "), *([""] * len(names)), ""])
    csv_path = out / "predictions.csv"
    atomic_write_text(csv_path, buf.getvalue())
    return PredictOutput(preds, skipped, csv_path)
