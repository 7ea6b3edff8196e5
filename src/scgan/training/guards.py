"""No non-finite model is ever saved: weights and calibration are checked before every checkpoint and model.pt.

The loss check in the training step catches a NaN loss before its optimiser step; this one catches a
last step that blew the weights up (e.g. ``lr=1e30``), whose losses were still finite: validation
then fits NaN or infinite statistics, and ``predict`` would call every image ``normal`` with score nan.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L

from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause


def diverged_error(cause: str, epoch: int, global_step: int, ckpt_dir: Path) -> NonFiniteModelError:
    """The one-line refusal: where training diverged, what is not finite, and what was kept."""
    last = ckpt_dir / "last.ckpt"
    kept = (f"{last} still holds the last good epoch" if last.exists()
            else "no epoch had finished with finite weights, so there is no checkpoint")
    return NonFiniteModelError(f"training diverged in epoch {epoch} (global step {global_step}): {cause}; "
                               f"nothing was saved for this epoch and no model.pt written; {kept} — lower "
                               "train.lr or check the data")


class FiniteModelGuard(L.Callback):
    """Refuses every checkpoint of a model whose saved weights (generator, head) or calibration are not finite."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir = Path(ckpt_dir)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Called while Lightning builds the checkpoint, before any byte is written: raising keeps the old file.
        cause = nonfinite_cause(pl_module.calibration, pl_module.parts())
        if cause is not None:
            raise diverged_error(cause, trainer.current_epoch, trainer.global_step, self.ckpt_dir)
