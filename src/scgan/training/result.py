"""What a fitted model leaves in its output folder, whatever its kind: model.pt, config.yaml, train_summary.json."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from scgan.artifacts.model_file import save_model
from scgan.calibration.stats import Calibration
from scgan.config import Config, to_yaml
from scgan.data.datasets import AnomalyDataset, calibration_warning
from scgan.data.io import InputSpec
from scgan.training.outdir import MODEL_FILE
from scgan.utils.atomic import atomic_write_text
from scgan.utils.runinfo import run_info

log = logging.getLogger("scgan")


@dataclass
class TrainResult:
    """Where a training run left its files."""

    output_dir: Path
    model_path: Path | None  # None on non-zero ranks
    last_checkpoint: Path | None  # an SCGAN's Lightning checkpoint (None for a kind that does not resume)
    epochs: int
    wall_time_s: float


def write_run(output_dir: Path, cfg: Config, parts: dict[str, nn.Module], calibration: Calibration | None,
              train_set: AnomalyDataset, n_val: int, wall_time_s: float, augmentation: str = "",
              input_spec: InputSpec | None = None, calibration_images: list | None = None, **facts: Any) -> Path:
    """Write model.pt, config.yaml and train_summary.json (provenance, data, ``facts``); warn once when the
    calibration rests on few images. ``calibration_images``: the validation images as the model took them, kept in
    the model file for re-fitting its calibration after an update. Returns the model file's path."""
    small_val = calibration_warning(n_val)
    meta = run_info(category=train_set.category, kind=train_set.kind, dataset=cfg.data.dataset, seed=cfg.seed,
                    n_train=len(train_set), n_val=n_val, train_wall_time_s=round(wall_time_s, 2), **facts,
                    **({"calibration_warning": small_val} if small_val else {}))
    path = save_model(output_dir / MODEL_FILE, cfg, parts, calibration, augmentation, meta, input_spec=input_spec,
                      calibration_images=calibration_images)
    atomic_write_text(output_dir / "config.yaml", to_yaml(cfg))
    atomic_write_text(output_dir / "train_summary.json", json.dumps(meta, indent=2))
    if small_val:
        log.warning("%s", small_val)
    return path
