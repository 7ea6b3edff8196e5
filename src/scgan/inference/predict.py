"""``scgan predict``: score image files with a trained model; CSV of scores and decisions, overlay PNGs.

A thin loop over :class:`scgan.inference.detector.Detector`. Every per-file problem (unreadable, not a regular
file, a name that cannot be written as it is) skips or escapes that one file: the other results and
``predictions.csv`` are always written. ``manifest.json`` names the files this run wrote; overlays an
earlier run left that this one did not rewrite are removed, so the folder holds one run only.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scgan.data.io import InputFile, expand_inputs
from scgan.utils.atomic import atomic_write_text
from scgan.utils.lock import locked_output
from scgan.utils.manifest import begin_outputs, read_manifest_files, write_manifest
from scgan.utils.names import printable, safe_stem
from scgan.utils.tables import DECISION_COLUMNS, csv_text, decision_cells

log = logging.getLogger(__name__)

OVERLAYS = "overlays"


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


def overlay_name(relative: Path, taken: set[str]) -> str:
    """``relative`` as a safe overlay path ("crack/000.png"), unique among ``taken`` (which it joins)."""
    parts = [safe_stem(part) for part in relative.parent.parts if part not in ("", ".", "..")]
    base = "/".join([*parts, safe_stem(relative.stem)])
    name, n = f"{base}.png", 1
    while name.casefold() in taken:  # two inputs that differ only in characters the name cannot keep
        n += 1
        name = f"{base}_{n}.png"
    taken.add(name.casefold())
    return name


def _remove_stale(out: Path, previous: list[str], kept: set[str]) -> None:
    """Delete the overlays an earlier run listed in its manifest that this run did not write."""
    root = (out / OVERLAYS).resolve()
    for name in previous:
        if not isinstance(name, str) or name in kept or not name.startswith(OVERLAYS + "/"):
            continue
        p = out / name
        try:
            if p.resolve().is_relative_to(root) and (p.is_file() or p.is_symlink()):
                p.unlink()
        except OSError as e:
            log.warning("could not remove the earlier run's %s: %s", printable(p), e.strerror)
    for d in sorted((q for q in root.rglob("*") if q.is_dir()), key=lambda q: -len(q.parts)) if root.is_dir() else []:
        try:
            d.rmdir()  # only empty folders go
        except OSError:
            pass


def make_detector(model=None, onnx_path: str | None = None, *, backend: str | None = None, batch_size: int = 16,
                  tile: int | None = None):
    """The Detector of ``onnx_path`` (onnxruntime, no torch), else of ``model`` (a LoadedModel, or a path scored on
    ``backend``), with ``batch_size`` and ``tile``; one read from a file knows the sha256 of the bytes it loaded
    (:func:`scgan.inference.detector.load_detector`)."""
    from scgan.inference.detector import Detector, load_detector

    options = {"batch_size": batch_size, "tile": tile}
    if onnx_path is not None:
        return load_detector(onnx_path, onnx=True, **options)
    if isinstance(model, (str, os.PathLike)):
        return load_detector(model, backend=backend, **options)
    return Detector.from_model(model, **options)


def run_predict(inputs: Iterable[str | Path], output_dir: str | Path, *, model=None, onnx_path: str | None = None,
                detector=None, batch_size: int = 16, tile: int | None = None, overlays: bool = True,
                captions: bool = True, progress: bool = True, backend: str | None = None,
                on_result: Callable[[Path, Any, str | None], None] | None = None) -> PredictOutput:
    """Score every readable image with a Detector; unreadable files are reported and skipped, never fatal.

    The detector is ``detector``, else built from ``onnx_path`` (onnxruntime, no torch) or ``model``
    (a LoadedModel, or a path scored on ``backend``: :mod:`scgan.inference.backend`), with ``batch_size`` and
    ``tile``. Each overlay PNG carries its score, threshold and decision as PNG text (:func:`overlay_text`) and,
    with ``captions``, in a band below the picture.
    ``on_result(path, result, overlay_path)`` is called for each scored image as it is scored (recording it
    elsewhere, say).
    """
    if detector is None:
        detector = make_detector(model, onnx_path, backend=backend, batch_size=batch_size, tile=tile)
    files = expand_inputs(inputs)
    if progress and detector.tile is not None:
        from scgan.inference.tiling import TileProgress

        detector.tile_progress = TileProgress()  # a line with the time left when an image's tiles take long
    with locked_output(output_dir, "predicting") as out:  # a second run into this folder is refused at once
        return _predict_into(out, files, detector, batch_size=batch_size, overlays=overlays, captions=captions,
                             progress=progress, on_result=on_result)


def _predict_into(out: Path, files: list[InputFile], detector, *, batch_size: int | None, overlays: bool,
                  captions: bool, progress: bool, on_result) -> PredictOutput:
    """:func:`run_predict`'s work in its locked output folder ``out``."""
    previous = read_manifest_files(out)
    begin_outputs(out)
    names = detector.score_names
    preds: list[Prediction] = []
    skipped: list[tuple[str, str]] = []
    written: list[str] = []
    taken: set[str] = set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="predict", leave=False, disable=None)  # None: off when not a terminal
    try:
        for outcome in detector.iter_predict((f.path for f in files), batch_size):
            f = files[outcome.index]
            if bar:
                bar.update(1)
            if outcome.result is None:
                skipped.append((str(f.path), outcome.error or "unreadable"))
                log.warning("skipped %s: %s", printable(f.path), printable(outcome.error or ""))
                continue
            r = outcome.result
            ov_path = None
            if overlays:
                name = overlay_name(f.relative, taken)
                ov_path = write_overlay(out / OVERLAYS / name, r, f.path, captions=captions)
                if ov_path is not None:
                    written.append(f"{OVERLAYS}/{name}")
            preds.append(Prediction(str(f.path), r.scores, r.normalized, r.anomalous, ov_path))
            if on_result is not None:
                on_result(f.path, r, ov_path)
    finally:  # what was scored is written, even when a later step failed
        if bar:
            bar.close()
        csv_path = out / "predictions.csv"
        atomic_write_text(csv_path, _csv(preds, skipped, names, detector.default_score, detector.threshold,
                                         detector.threshold_normalized))
        written.append("predictions.csv")
        _remove_stale(out, previous, set(written))
        write_manifest(out, written, command="scgan predict",
                       model=printable(detector.path) if detector.path else None,
                       scored=len(preds), skipped=len(skipped))
    return PredictOutput(preds, skipped, csv_path)


def write_overlay(target: Path, r, source: Path, *, captions: bool = True) -> str | None:
    """Save ``r``'s overlay PNG at ``target`` (its folder made); its path, or None with a warning where it could not
    be written (the score stands; only its picture is missing)."""
    from scgan.reporting.visualize import caption_band, overlay
    from scgan.utils.atomic import save_png

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        picture = overlay(r.image, r.heat)
        if captions:
            picture = caption_band(picture, caption_lines(r), r.decision)
        save_png(target, picture, overlay_text(r, source.name))
    except OSError as e:
        log.warning("no overlay for %s: %s", printable(source), e.strerror or e)
        return None
    return str(target)


def caption_lines(r) -> list[str]:
    """The overlay's caption: the decision, then the score against the threshold ("patch_max 3.21 > 2.9")."""
    if r.threshold is None:
        return ["no threshold (no calibration)", f"{r.score_name} {r.score:.4g}"]
    return [r.decision, f"{r.score_name} {r.score:.4g} {'>' if r.anomalous else '<='} {r.threshold:.4g}"]


def overlay_text(r, name: str) -> dict[str, str]:
    """PNG text chunks of an overlay: what was scored and what the model decided."""
    def g(v) -> str:
        return "" if v is None else f"{v:.6g}"

    threshold_norm = None if r.calibration is None else r.calibration.threshold_normalized(r.score_name)
    return {"Source": printable(name), "scgan.score_name": r.score_name, "scgan.score": g(r.score),
            "scgan.threshold": g(r.threshold), "scgan.score_normalized": g(r.normalized),
            "scgan.threshold_normalized": g(threshold_norm), "scgan.decision": r.decision or "",
            "scgan.heat": r.calibration.heat_legend() if r.calibration is not None else "each map over its own maximum"}


def _csv(preds: list[Prediction], skipped: list[tuple[str, str]], names: tuple[str, ...], default: str,
         threshold: float | None, threshold_norm: float | None) -> str:
    """predictions.csv: one row per input; paths and reasons as cells no spreadsheet runs as formulas.

    Every row holds the threshold beside the score, raw and normalised: an image is anomalous when its score
    exceeds the threshold (equally, its normalised score exceeds the normalised threshold, which is at most 1).
    """
    rows = [prediction_row(p, names, default, threshold, threshold_norm) for p in preds]
    rows += [[path, *decision_cells(None, threshold, None, threshold_norm, None,
                                    note="error: " + reason.replace("\n", " ")), *([None] * len(names)), None]
             for path, reason in skipped]
    return csv_text(prediction_header(names), rows)


def prediction_header(names: tuple[str, ...]) -> list[str]:
    """predictions.csv's columns: the path, :data:`DECISION_COLUMNS`, every named score, the overlay."""
    return ["path", *DECISION_COLUMNS, *names, "overlay"]


def prediction_row(p: Prediction, names: tuple[str, ...], default: str, threshold: float | None,
                   threshold_norm: float | None) -> list[Any]:
    """One scored image's predictions.csv row (cells for :func:`scgan.utils.tables.csv_text`); a score the
    prediction lacks (a row of another model's) is empty."""
    return [p.path, *decision_cells(p.scores.get(default), threshold, p.normalized, threshold_norm, p.anomalous),
            *(p.scores.get(n) for n in names), p.overlay]
