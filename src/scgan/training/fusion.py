"""Fitting the fusion (kind fusion): the PatchCore detector, then the SCGAN + head, each fitted and calibrated as its
own preset fits it (into a temporary folder inside the output folder, gone when the fit ends), then the weights that
join them, measured on the validation images through the fusion's own graph, and the fusion's own calibration on
the same images."""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause
from scgan.artifacts.model_file import LoadedModel, load_model
from scgan.calibration.stats import HEAT_AT_THRESHOLD, add_shown_maps, heat_scale
from scgan.config import Config
from scgan.data.datasets import dataset_for, eval_loader, stream_for
from scgan.inference.calibrate import calibrate
from scgan.models.fusion.kind import FUSION, part_config
from scgan.models.fusion.scorer import PARTS, FusionScorer, FusionWeights
from scgan.training.gan_entry import fit_scgan
from scgan.training.patchcore import fit_patchcore
from scgan.training.result import TrainResult, write_run

_PARTS_FOLDER = ".fusion-parts-"  # the temporary folder's prefix inside the output folder


def _span(part: str, what: str, low: float, high: float) -> float:
    """high - low; ValueError where it is nothing beside float32's rounding (a model that gives every normal
    validation image the same value has nothing to be normalised by)."""
    span = high - low
    if not np.isfinite(span):
        raise ValueError(f"the fusion's {part} model gives its {what} values that are not finite on the normal "
                         f"validation images ({low:g} to {high:g}): check the data, or fit it again")
    if not span > max(1e-6 * max(abs(low), abs(high)), 1e-9):
        raise ValueError(f"the fusion's {part} model gives its {what} the same value on every normal validation "
                         f"image ({low:g}), so it cannot be normalised: train it longer (train.steps) or give more "
                         "normal images")
    return float(span)


@torch.inference_mode()
def fusion_weights(loaded: dict[str, LoadedModel], val_loader, quantile: float, size: int) -> FusionWeights:
    """The weights that join the two fitted models: each one's default score (name and column) and sigma, and,
    measured on the normal validation images as the fusion's graph brings them to each model (the SCGAN's from the
    PatchCore detector's input), its default score's range and its map's heat range, by the calibration's own rule
    (:func:`scgan.calibration.stats.heat_scale`: the normal pixels' 0.9 quantile at 0, the maps' maxima's
    ``quantile`` at HEAT_AT_THRESHOLD)."""
    names = [loaded[p].default_score for p in PARTS]
    scorers = [loaded[p].scorer() for p in PARTS]
    column = [s.names.index(n) for s, n in zip(scorers, names)]
    sigma = [float(s.sigma) for s in scorers]
    probe = FusionScorer(*scorers, FusionWeights().set(names, column, [(0.0, 1.0)] * 2, [(0.0, 1.0)] * 2, sigma),
                         size)
    scores: list[list[np.ndarray]] = [[], []]
    pixels: list[list[np.ndarray]] = [[], []]
    maxima: list[list[float]] = [[], []]
    for batch in val_loader:
        for i, (s, m) in enumerate(probe.part_outputs(batch["image"], speed=True)):
            scores[i].append(s.double().numpy())
            add_shown_maps(m.float().numpy(), pixels[i], maxima[i])
    score, heat = [], []
    for i, part in enumerate(PARTS):
        values = np.concatenate(scores[i])
        lo, hi = float(values.min()), float(values.max())
        score.append((lo, _span(part, f"default score {names[i]}", lo, hi)))
        low, threshold = heat_scale(pixels[i], np.asarray(maxima[i]), quantile)
        heat.append((low, _span(part, "map", low, threshold) / HEAT_AT_THRESHOLD))
    return FusionWeights().set(names, column, score, heat, sigma)


class FusionPartError(RuntimeError):
    """One of the fusion's models did not finish; ``exit_code`` is its own (130 or 143 for a stopped training)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fit_part(part: str, fit, cfg: Config, folder: Path) -> LoadedModel:
    """One model of the fusion fitted by ``fit`` with its own config ``cfg`` into ``folder`` and loaded; its failure
    said as the fusion's (:class:`FusionPartError`, from the part's own): the part's message without its clauses
    that point at files in the temporary folder or at --resume, which a fusion does not take."""
    folder.mkdir()
    try:
        return load_model(fit(cfg, folder).model_path)
    except Exception as e:
        clauses = [c for c in (str(e) or type(e).__name__).split("; ")
                   if "--resume" not in c and str(folder) not in c and _PARTS_FOLDER not in c]
        cause = "; ".join(clauses) or type(e).__name__
        raise FusionPartError(f"the fusion's {part} model did not finish ({cause}); its files were in a temporary "
                              "folder, now removed, and nothing was written: fit the fusion again (a fusion does "
                              "not resume)", int(getattr(e, "exit_code", 1))) from e


def fit_fusion(cfg: Config, output_dir: Path, resume=None, progress: bool = True,
               callbacks: list | None = None) -> TrainResult:
    """Fit a fusion into ``output_dir`` (claimed by :func:`scgan.training.fit.train`)."""
    if callbacks:
        raise ValueError("a fusion is fitted model by model; there is no Lightning callback to call")
    start = time.perf_counter()
    print(f"fitting a fusion (preset {cfg.preset}): the PatchCore detector, then the SCGAN + head "
          f"({cfg.train.steps or cfg.train.epochs} {'steps' if cfg.train.steps else 'epochs'}), then the fusion's "
          "calibration on the validation images", flush=True)
    for stale in output_dir.glob(f"{_PARTS_FOLDER}*"):  # a fit killed before it could remove its own (the folder
        if stale.is_dir() and not stale.is_symlink():  # is claimed: no other fit uses it)
            shutil.rmtree(stale, ignore_errors=True)
        elif stale.is_symlink():
            with contextlib.suppress(OSError):
                stale.unlink()
    fitters = {"features": lambda c, d: fit_patchcore(c, d, progress=progress),
               "restoration": lambda c, d: fit_scgan(c, d, progress=progress)}
    loaded: dict[str, LoadedModel] = {}
    facts: dict = {}
    with tempfile.TemporaryDirectory(prefix=_PARTS_FOLDER, dir=output_dir) as parts_dir:
        for part in PARTS:
            t0 = time.perf_counter()
            loaded[part] = _fit_part(part, fitters[part], part_config(cfg, part), Path(parts_dir) / part)
            facts[f"{part}_fit_s"] = round(time.perf_counter() - t0, 2)
            facts[f"{part}_default_score"] = loaded[part].default_score
            facts[part] = loaded[part].meta  # each model's own facts: its bank, its steps and epochs
            if progress:
                print(f"{part} fitted in {facts[f'{part}_fit_s']:.0f} s (default score "
                      f"{loaded[part].default_score})", file=sys.stderr, flush=True)
    spec = loaded["features"].input_spec  # the channels the PatchCore detector found
    val_set = dataset_for(cfg.data, "val", spec)
    t0 = time.perf_counter()

    def loader():
        return eval_loader(val_set, cfg.runtime.eval_batch_size, cfg.runtime.num_workers)

    weights = fusion_weights(loaded, loader(), cfg.score.threshold_quantile, cfg.model.image_size)
    parts = {**loaded["features"].parts, **loaded["restoration"].parts, "fusion": weights}
    calibration = calibrate(FUSION.build_scorer(cfg, parts), loader(), cfg)
    cause = nonfinite_cause(calibration, parts)
    if cause is not None:
        raise NonFiniteModelError(f"the fitted model is not finite ({cause}); nothing was written — check the data")
    wall = time.perf_counter() - start
    model_path = write_run(output_dir, cfg, parts, calibration, stream_for(cfg.data, "train", spec), len(val_set),
                           wall, augmentation=loaded["restoration"].augmentation, input_spec=spec,
                           calibration_images=list(val_set.images),
                           selection="each model as its preset fits it; the fusion itself chooses nothing",
                           epoch=loaded["restoration"].meta.get("epoch"),
                           calibration_s=round(time.perf_counter() - t0, 2), **facts)
    if progress:
        print(f"fitted in {wall:.0f} s", file=sys.stderr, flush=True)
    return TrainResult(output_dir, model_path, None, 0, wall)
