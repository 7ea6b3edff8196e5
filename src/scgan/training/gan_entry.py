"""The SCGAN's fitter, importing Lightning only when an SCGAN is trained (inference never imports it)."""
from __future__ import annotations

from pathlib import Path

from scgan.config import Config
from scgan.training.result import TrainResult


def fit_scgan(cfg: Config, output_dir: Path, resume: str | Path | None = None, progress: bool = True,
              callbacks: list | None = None) -> TrainResult:
    """Train an SCGAN into ``output_dir`` (:func:`scgan.training.gan.train_gan`)."""
    from scgan.training.gan import train_gan  # Lightning: imported only to train an SCGAN

    return train_gan(cfg, output_dir, resume, progress, callbacks)
