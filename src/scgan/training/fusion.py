"""Fitting the fusion (kind fusion): the PatchCore detector, then the SCGAN + head, each fitted and calibrated as its
own preset fits it (into a temporary folder inside the output folder, gone when the fit ends), then the weights that
join them from their calibrations, and the fusion's own calibration on the same validation images."""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause
from scgan.artifacts.model_file import LoadedModel, load_model
from scgan.config import Config
from scgan.data.datasets import dataset_for, eval_loader, stream_for
from scgan.inference.calibrate import calibrate
from scgan.models.fusion.kind import FUSION, part_config
from scgan.models.fusion.scorer import PARTS, FusionWeights
from scgan.training.gan_entry import fit_scgan
from scgan.training.patchcore import fit_patchcore
from scgan.training.result import TrainResult, write_run


def _normalising(part: str, loaded: LoadedModel) -> tuple[int, tuple[float, float], tuple[float, float], float]:
    """A fitted model's default score column, that score's normal validation range (low, span), its map's heat range
    (low, span) and its sigma: what the fusion normalises it with. ValueError where the score or the map does not
    vary over the normal validation images (nothing to normalise by: that model has learned nothing to fuse)."""
    cal, name = loaded.calibration, loaded.default_score
    stats = cal.scores[name]
    low, high = cal.heat_range()
    for what, lo, hi in ((f"default score {name}", stats.min, stats.max), ("map", low, high)):
        if not hi - lo > 1e-6 * max(abs(lo), abs(hi)):  # float32's rounding, relative
            raise ValueError(f"the fusion's {part} model gives its {what} the same value on every normal validation "
                             f"image ({lo:g}), so it cannot be normalised: train it longer (train.steps) or give more "
                             "normal images")
    return (loaded.score_names.index(name), (stats.min, stats.max - stats.min), (low, high - low),
            float(loaded.scorer().sigma))


def fit_fusion(cfg: Config, output_dir: Path, resume=None, progress: bool = True,
               callbacks: list | None = None) -> TrainResult:
    """Fit a fusion into ``output_dir`` (claimed by :func:`scgan.training.fit.train`)."""
    if callbacks:
        raise ValueError("a fusion is fitted model by model; there is no Lightning callback to call")
    start = time.perf_counter()
    print(f"fitting a fusion (preset {cfg.preset}): the PatchCore detector, then the SCGAN + head "
          f"({cfg.train.steps or cfg.train.epochs} {'steps' if cfg.train.steps else 'epochs'}), then the fusion's "
          "calibration on the validation images", flush=True)
    facts: dict = {}
    loaded: dict[str, LoadedModel] = {}
    with tempfile.TemporaryDirectory(prefix=".fusion-parts-", dir=output_dir) as parts_dir:
        for part, fit in (("features", lambda c, d: fit_patchcore(c, d, progress=progress)),
                          ("restoration", lambda c, d: fit_scgan(c, d, progress=progress))):
            t0 = time.perf_counter()
            folder = Path(parts_dir) / part
            folder.mkdir()
            done = fit(part_config(cfg, part), folder)
            loaded[part] = load_model(done.model_path)
            facts[f"{part}_fit_s"] = round(time.perf_counter() - t0, 2)
            facts[f"{part}_default_score"] = loaded[part].default_score
            if progress:
                print(f"{part} fitted in {facts[f'{part}_fit_s']:.0f} s (default score "
                      f"{loaded[part].default_score})", file=sys.stderr, flush=True)
    column, score, heat, sigma = zip(*(_normalising(p, loaded[p]) for p in PARTS))
    spec = loaded["features"].input_spec  # the channels the PatchCore detector found
    parts = {**loaded["features"].parts, **loaded["restoration"].parts,
             "fusion": FusionWeights().set(list(column), list(score), list(heat), list(sigma))}
    scorer = FUSION.build_scorer(cfg, parts)
    val_set = dataset_for(cfg.data, "val", spec)
    t0 = time.perf_counter()
    calibration = calibrate(scorer, eval_loader(val_set, cfg.runtime.eval_batch_size, cfg.runtime.num_workers), cfg)
    cause = nonfinite_cause(calibration, parts)
    if cause is not None:
        raise NonFiniteModelError(f"the fitted model is not finite ({cause}); nothing was written — check the data")
    wall = time.perf_counter() - start
    model_path = write_run(output_dir, cfg, parts, calibration, stream_for(cfg.data, "train", spec), len(val_set),
                           wall, input_spec=spec, calibration_images=list(val_set.images),
                           selection="each model as its preset fits it; the fusion itself chooses nothing",
                           calibration_s=round(time.perf_counter() - t0, 2), **facts)
    if progress:
        print(f"fitted in {wall:.0f} s", file=sys.stderr, flush=True)
    return TrainResult(output_dir, model_path, None, 0, wall)
