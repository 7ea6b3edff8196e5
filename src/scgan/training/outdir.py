"""A training run's output folder: what counts as a run there, the refusal to discard one, ``--overwrite``.

``scgan train`` into a folder that holds a run continues it (``--resume auto``), replaces it
(``--overwrite``), or is refused; and it holds the folder's lock (``scgan.utils.lock``) throughout.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from scgan.utils.atomic import clean_stale_temps
from scgan.utils.lock import folder_lock

MODEL_FILE = "model.pt"
# The files a training run writes (besides checkpoints/*.ckpt) and the folders it writes into.
RUN_FILES = (MODEL_FILE, "config.yaml", "train_summary.json", "logs/metrics.csv", "logs/hparams.yaml")
RUN_FOLDERS = ("checkpoints", "logs", "tensorboard")


def _is_rank_zero() -> bool:
    """False in the processes a multi-device launcher starts for ranks > 0 (rank 0 claimed the folder)."""
    # Lightning's launcher and torchrun set LOCAL_RANK / NODE_RANK / RANK, SLURM sets SLURM_PROCID.
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def existing_run(output_dir: Path) -> list[str]:
    """The run files present in ``output_dir`` (relative names, checkpoints first); [] for no run."""
    ckpt_dir = output_dir / "checkpoints"
    found = sorted(f"checkpoints/{p.name}" for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    return found + [name for name in RUN_FILES if os.path.lexists(output_dir / name)]


def remove_run(output_dir: Path) -> None:
    """Delete the training run's files in ``output_dir`` (only those: other files there stay).

    Links are removed as links, never followed; a run folder that is itself a link is refused.
    """
    for folder in RUN_FOLDERS:
        if (output_dir / folder).is_symlink():
            raise ValueError(f"{output_dir / folder} is a symbolic link; --overwrite only deletes files in real "
                             "folders: remove the old run by hand")
    for name in existing_run(output_dir):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output_dir / name)
    tb = output_dir / "tensorboard"
    if tb.is_dir():
        for p in tb.glob("events.out.tfevents.*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
    for folder in RUN_FOLDERS:
        with contextlib.suppress(OSError):
            clean_stale_temps(output_dir / folder)
            (output_dir / folder).rmdir()  # only when empty


def _refusal(output_dir: Path, found: list[str], why: str) -> FileExistsError:
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return FileExistsError(f"{output_dir} already holds a training run ({shown}); {why}")


@contextlib.contextmanager
def claim_output(output_dir: Path, resume: str | Path | None, overwrite: bool,
                 resumable: bool = True) -> Iterator[None]:
    """Hold ``output_dir``'s lock; refuse to discard a run there unless resuming it or ``overwrite``.

    ``--resume auto`` without a ``last.ckpt`` starts afresh only where no model was written yet (an
    interrupted first epoch): a finished run's ``model.pt`` is never replaced without ``--overwrite``.
    Stale temporary files of killed writers are removed. Ranks > 0 of a multi-device run skip all of
    this: their rank 0 holds the claim. ``resumable=False`` (a model fitted in one pass) only changes the advice.
    """
    if overwrite and resume is not None:
        raise ValueError("--overwrite starts a new run and --resume continues one: pass only one of them")
    if not _is_rank_zero():
        yield
        return
    with folder_lock(output_dir, "training"):
        found = existing_run(output_dir)
        if found and overwrite:
            remove_run(output_dir)
        elif found and resume is None:
            raise _refusal(output_dir, found, "continue it with --resume auto, or pass --overwrite to delete it "
                                              "and train anew" if resumable else
                           "pass --overwrite to delete it and fit anew (or choose another --output)")
        elif (found and str(resume) == "auto" and not (output_dir / "checkpoints" / "last.ckpt").exists()
              and (output_dir / MODEL_FILE).exists()):
            raise _refusal(output_dir, found, "it has no checkpoints/last.ckpt to resume from; pass --overwrite "
                                              "to delete it and train anew")
        for folder in (output_dir, *(output_dir / f for f in RUN_FOLDERS)):
            clean_stale_temps(folder)
        yield
