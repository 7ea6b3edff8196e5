"""Testing a model: score a labelled test split, compute every metric of every named score, write metrics.json,
scores.csv and the report (what ``scgan test`` runs)."""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scgan.artifacts.model_file import LoadedModel, load_model
from scgan.calibration.stats import Calibration
from scgan.data.datasets import build_dataset, calibration_warning, eval_loader
from scgan.data.io import load_image_with_size, load_mask
from scgan.inference.summary import metrics_for
from scgan.models.scoring import ScoreResult, score_loader
from scgan.utils.atomic import atomic_write_text
from scgan.utils.lock import locked_output
from scgan.utils.manifest import file_identity, write_manifest
from scgan.utils.names import csv_cell, printable
from scgan.utils.runinfo import run_info
from scgan.utils.staging import staged_outputs
from scgan.utils.tables import DECISION_COLUMNS, csv_text, decision_cells, decision_label

log = logging.getLogger("scgan")


TEST_FILES = ("metrics.json", "scores.csv")  # beside the report's files (REPORT_FILES)
REPORT_SIDE = 512  # report examples are shown at the file's resolution, reduced to at most this a side


@dataclass
class TestOutput:
    """The metrics dict (as written to metrics.json) and where things were written."""

    metrics: dict[str, Any]
    output_dir: Path
    result: ScoreResult


def _clean(v: Any) -> Any:
    """NaN -> None so metrics.json is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def scores_csv(result: ScoreResult, calibration: Calibration | None, default: str) -> str:
    """scores.csv: one row per test image with its path, defect, label and every named score; with a
    calibration also the default score raw and normalised, the threshold in both units, and the decision
    (anomalous when score > threshold, equally score_normalized > threshold_normalized)."""
    header = ["path", "defect", "label", *result.names]
    if calibration:
        header += DECISION_COLUMNS
        threshold = calibration.scores[default].threshold
        threshold_norm = calibration.threshold_normalized(default)
    norm = calibration.normalize(default, result.score(default)) if calibration else None
    dec = calibration.decide(default, result.score(default)) if calibration else None
    rows = []
    for i, p in enumerate(result.paths):
        row = [csv_cell(p), csv_cell(result.defects[i]), int(result.labels[i]), *result.scores[i]]
        if calibration:
            row += decision_cells(result.score(default)[i], threshold, norm[i], threshold_norm, bool(dec[i]))
        rows.append(row)
    return csv_text(header, rows)


def run_test(model: LoadedModel | str | Path, output_dir: str | Path, *, root: str | None = None,
             category: str | None = None, dataset: str | None = None, require_masks: bool | None = None,
             report: bool = True, progress: bool = True, n_examples: int = 6, warn: bool = True) -> TestOutput:
    """Score the test split of the model's dataset (or another root/category) and write metrics.json + report.

    The output folder is locked while the test runs; its ``manifest.json`` (written last) names the
    model and lists the files of this run. The files are written into a temporary folder and swapped in at the end
    (:func:`scgan.utils.staging.staged_outputs`): a run that fails leaves the previous run's set whole.
    ``report=False`` deletes an earlier run's report files.
    ``warn=False``: the caller already said that the calibration rests on few images (metrics.json still says it).
    """
    start = time.time()
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    with locked_output(output_dir, "testing") as out:  # before the scoring: an unwritable folder fails at once
        return _run_test(loaded, out, start, root, category, dataset, require_masks, report, progress, n_examples,
                         warn)


def _run_test(loaded: LoadedModel, out: Path, start: float, root: str | None, category: str | None,
              dataset: str | None, require_masks: bool | None, report: bool, progress: bool,
              n_examples: int, warn: bool = True) -> TestOutput:
    cfg = loaded.config
    d = cfg.data
    ds = build_dataset(dataset or d.dataset, root or d.root, category if category is not None else d.category,
                       split="test", spec=loaded.input_spec, skip_bad_images=d.skip_bad_images,
                       require_masks=d.require_masks if require_masks is None else require_masks)
    loader = eval_loader(ds, cfg.runtime.eval_batch_size)
    small_val = calibration_warning(loaded.calibration.n_images) if loaded.calibration is not None else None
    if small_val and warn:
        log.warning("%s", small_val)  # before the progress bar starts: on its own line
    scorer = loaded.scorer()
    result = score_loader(scorer, loader, progress=progress)
    default = loaded.default_score
    metrics = metrics_for(result, loaded.calibration, default, ds.stored_masks() if ds.has_masks else None,
                          loaded.kind)
    if loaded.calibration is not None and loaded.calibration.selection:
        by_strength = loaded.calibration.selection_by_strength
        strengths = f" blended in at strengths {', '.join(by_strength)} (mean AUROC)" if by_strength else ""
        metrics["score_selection"] = {
            "rule": "auto: the score that best separates normal validation images from the same images with "
                    f"synthetic confetti defects{strengths}; no test image involved",
            "separation_auroc": loaded.calibration.selection,
            "selected": loaded.calibration.selected_score,
        }
        if by_strength:
            metrics["score_selection"]["separation_auroc_by_strength"] = by_strength
    metrics["map_smoothing"] = {"sigma": scorer.sigma, "config": cfg.score.sigma}
    if loaded.calibration is not None and loaded.calibration.sigma_selection:
        metrics["map_smoothing"].update(
            rule="auto: the sigma whose maps best locate synthetic confetti defects pasted into normal validation "
                 "images (pixel AUROC, ties to S / 64); no test image involved",
            pixel_auroc_by_sigma=loaded.calibration.sigma_selection)
    if small_val:
        metrics["calibration_warning"] = small_val
    metrics["info"] = run_info(
        checkpoint=printable(loaded.path), category=printable(ds.category), dataset=dataset or d.dataset,
        root=printable(root or d.root),
        seed=cfg.seed, model=loaded.meta.get("selection", "last epoch (no model selection)"),
        trained_epochs=loaded.meta.get("epoch"), n_test=len(ds), n_anomalous=int(result.labels.sum()),
        test_wall_time_s=round(time.time() - start, 2),
        calibration="normal validation images only" if loaded.calibration else "none (no validation data)",
    )
    metrics["config"] = cfg.to_dict()
    from scgan.reporting.report import REPORT_FILES  # matplotlib: imported only when a report is wanted or removed

    # Without a report, an earlier run's report files go too: they would describe another model or other data.
    with staged_outputs(out, [*TEST_FILES, *REPORT_FILES]) as stage:
        atomic_write_text(stage / "metrics.json", json.dumps(_clean(metrics), indent=2))
        atomic_write_text(stage / "scores.csv", scores_csv(result, loaded.calibration, default))
        files = list(TEST_FILES)
        if report:
            _write_test_report(stage, ds, result, metrics, loaded, n_examples)
            files += [f for f in REPORT_FILES if (stage / f).exists()]
        model = file_identity(loaded.path) if loaded.path is not None and Path(loaded.path).is_file() else None
        write_manifest(stage, files, command="scgan test", model=model,
                       data={"dataset": dataset or d.dataset, "root": printable(root or d.root),
                             "category": printable(ds.category), "n_test": len(ds)})
    return TestOutput(metrics=metrics, output_dir=out, result=result)


def _write_test_report(out: Path, ds, result: ScoreResult, metrics: dict, loaded: LoadedModel, k: int) -> None:
    from scgan.reporting.report import ReportExample, write_report

    default = loaded.default_score
    s = result.score(default)
    order = np.argsort(-s, kind="stable")
    cal = loaded.calibration
    if cal is None:
        raise ValueError(f"{loaded.path} has no calibration, so its heat maps have no scale; re-fit one with "
                         "'scgan calibrate', or pass --no-report")
    flagged = cal.decide(default, s)
    labels = result.labels.astype(bool)

    @functools.cache  # the misses are among the lowest scores, the false alarms among the highest: read each once
    def example(i: int) -> ReportExample:
        # Shown at the file's own resolution (up to REPORT_SIDE), not at S: defects stay visible.
        sample = ds.samples[i]
        img = load_image_with_size(sample.path, None, max_side=REPORT_SIDE)[0]
        mask = load_mask(sample.mask_path, None) if sample.mask_path is not None and result.masks[i].any() else None
        return ReportExample(name=Path(result.paths[i]).parent.name + "/" + Path(result.paths[i]).name,
                             image=img, heat=cal.heat(result.maps[i]), score=float(s[i]), label=int(result.labels[i]),
                             mask=mask, decision=decision_label(bool(flagged[i])))

    top = [example(int(i)) for i in order[:k]]
    bottom = [example(int(i)) for i in order[::-1][:k]]
    missed = [example(int(i)) for i in [i for i in order[::-1] if labels[i] and not flagged[i]][:k]]  # clearest first
    alarms = [example(int(i)) for i in [i for i in order if not labels[i] and flagged[i]][:k]]  # loudest first
    info = dict(metrics["info"])
    write_report(out, title=f"scgan test report — {ds.category}", metrics=metrics, config=loaded.config.to_dict(),
                 scores=s, labels=result.labels, score_name=default, examples_top=top, examples_bottom=bottom,
                 info=info, missed=missed, false_alarms=alarms, heat_ticks=cal.heat_ticks(),
                 heat_legend=cal.heat_legend())
