"""Training progress where no terminal shows it (CI logs, ``> file``): one plain line per epoch.

A progress bar redraws itself with carriage returns; in a log file each redraw is one more line, so
a short training writes hundreds. :class:`EpochLines` takes the bar's place there.
"""
from __future__ import annotations

import sys
import time
from typing import IO

from lightning.pytorch.callbacks import ProgressBar


def is_terminal(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr, where progress goes) is an interactive terminal."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class EpochLines(ProgressBar):
    """Lightning's progress bar replaced by one line per finished epoch: losses, validation threshold, time."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._enabled = True
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Lightning runs the epoch's validation (the calibration) before this hook: its threshold is known.
        if not self._enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        shown = [(k.split("/", 1)[1], m[k]) for k in ("train/total", "train/d_loss", "val/threshold") if k in m]
        parts = " ".join(f"{name} {float(v):.4g}" for name, v in shown)
        epochs = trainer.max_epochs
        where = (f"epoch {trainer.current_epoch + 1}/{epochs}" if epochs and epochs > 0
                 else f"epoch {trainer.current_epoch + 1} (step {trainer.global_step}/{trainer.max_steps})")
        print(f"{where}: {parts} ({time.monotonic() - self._start:.1f} s)", file=self._stream or sys.stderr, flush=True)
