"""Training an SCGAN on one category with Lightning: the Trainer, checkpoints, resume, logs, multi-device."""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import Dataset

from scgan.artifacts.finite import nonfinite_cause
from scgan.artifacts.model_file import CheckpointError, read_torch_file
from scgan.config import Config, migrate_config
from scgan.data.augment import resolve_augmentation
from scgan.models.scgan.kind import SCGAN
from scgan.training.datamodule import SCGANDataModule
from scgan.training.guards import FiniteModelGuard, diverged_error
from scgan.training.logs import AtomicCSVLogger
from scgan.training.module import SCGANModule
from scgan.training.progress import EpochLines, is_terminal
from scgan.training.result import TrainResult, write_run
from scgan.utils.atomic import DiskFullError, atomic_write_with
from scgan.utils.runinfo import available_cores
from scgan.utils.seed import seed_everything

log = logging.getLogger("scgan")


class TrainingStopped(RuntimeError):
    """Training was stopped by SIGTERM or Ctrl-C; ``exit_code`` is the shell's convention (143, 130)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def at(cls, trainer: L.Trainer, sigterm: bool, ckpt_dir: Path) -> TrainingStopped:
        what, code = ("SIGTERM", 128 + signal.SIGTERM) if sigterm else ("Ctrl-C", 128 + signal.SIGINT)
        last = ckpt_dir / "last.ckpt"
        kept = (f"{last} holds the last completed epoch: continue with --resume auto" if last.exists()
                else "no epoch had completed, so there is no checkpoint to resume from")
        return cls(f"training stopped by {what} in epoch {trainer.current_epoch} (global step {trainer.global_step}); "
                   f"{kept}", int(code))


def _loggers(output_dir: Path, resumed_epoch: int | None = None) -> list:
    loggers: list = [AtomicCSVLogger(save_dir=str(output_dir), name="logs", version="", keep_through=resumed_epoch)]
    try:
        import tensorboard  # noqa: F401  (optional)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version=""))
    except ImportError:
        pass
    return loggers


def resolve_resume(resume: str | Path | None, output_dir: Path) -> Path | None:
    """'auto' -> output_dir/checkpoints/last.ckpt when it exists; a path must exist."""
    if resume is None:
        return None
    if str(resume) == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        return last if last.exists() else None
    p = Path(resume)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {p}")
    return p


def _checkpoint_epoch(path: Path, cfg: Config) -> int:
    """The epoch counter of a Lightning checkpoint of scgan for cfg's network; a clear error for any other file."""
    hint = "not a training checkpoint written by 'scgan train', or damaged; resume from OUTPUT/checkpoints/last.ckpt"
    try:  # mmap: only the counter is read, not the weights
        ckpt = read_torch_file(path, mmap=True)
    except CheckpointError:
        raise CheckpointError(f"cannot resume from {path}: {hint}") from None
    if "state_dict" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"cannot resume from {path}: {hint}")
    # A setting added after the checkpoint was written had its older value there (output_scale: 1.0).
    saved = migrate_config({"model": {}, **(ckpt.get("hyper_parameters") or {}).get("config", {})})["model"]
    differ = [f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in cfg.to_dict()["model"].items()
              if saved.get(k) != v and f"model.{k}" not in SCGAN.recalibration_keys]  # not scoring-only ones
    if differ:
        raise CheckpointError(f"cannot resume from {path}: it was trained with another network ({'; '.join(differ)})")
    return int(ckpt["epoch"])


# G and D step with separate backward passes; D's leaves G's parameters without gradients, and DDP
# must be told so, or it never all-reduces D's gradients and D drifts apart on each rank.
_DDP_GAN_STRATEGIES = {name: f"{name}_find_unused_parameters_true" for name in ("ddp", "ddp_spawn", "ddp_fork",
                                                                                 "ddp_notebook")}


def resolve_strategy(strategy: str) -> str:
    """The Lightning strategy name for cfg.runtime.strategy: plain DDP variants get find_unused_parameters."""
    return _DDP_GAN_STRATEGIES.get(strategy, strategy)


def check_devices(accelerator: str, devices: int | str) -> None:
    """Refuse device counts the machine cannot run: more CPU processes than cores, more GPUs than present.

    Lightning itself would start any number of CPU processes (``devices=64`` on 2 cores).
    """
    try:
        n = int(devices)
    except (TypeError, ValueError):
        return  # "auto" or a GPU list such as "0,1": Lightning checks those
    acc = ("gpu" if torch.cuda.is_available() else "cpu") if accelerator == "auto" else accelerator
    if acc == "cpu":
        cores = available_cores()
        if n > cores:
            raise ValueError(f"devices={n} on the cpu accelerator would start {n} training processes on "
                             f"{cores} CPU core(s); use --devices {cores} or fewer")
    elif acc in ("gpu", "cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ValueError("accelerator gpu was requested but no CUDA GPU is available; use --accelerator cpu")
        if n > gpus:
            raise ValueError(f"devices={n} but this machine has {gpus} GPU(s); use --devices {gpus} or fewer "
                             "(-1 = all)")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file beside the target, fsynced, then renamed.

    Lightning's own save stages the file in the system temp folder and moves it: across file systems
    that move is a copy into the target, so a crash mid-copy would leave a truncated last.ckpt.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write_with(Path(path), lambda f: torch.save(checkpoint, f))


def planned_epochs(cfg: Config, n_train: int) -> int:
    """Epochs to train: ``train.epochs``, or with ``train.steps`` > 0 as many whole epochs as it takes to make
    that many optimiser steps on ``n_train`` images (one process; batches of train.batch_size, last dropped)."""
    if cfg.train.steps <= 0:
        return cfg.train.epochs
    per_epoch = max(1, n_train // max(2, min(cfg.train.batch_size, n_train)))
    return max(1, math.ceil(cfg.train.steps / per_epoch))


def plan_line(cfg: Config, n_train: int, n_val: int, augmentation: str, resumed_epoch: int | None = None) -> str:
    """What a training run will do, said before the first epoch (which may take minutes to end): the preset,
    the images, the epochs and optimiser steps, and what calibrates the model."""
    epochs = planned_epochs(cfg, n_train)
    batch = max(2, min(cfg.train.batch_size, n_train))
    per_epoch = max(1, n_train // batch)
    m = cfg.model
    head = f", learned head ({m.head})" if m.head not in (None, "none") else ""
    resumed = f"; resuming after epoch {resumed_epoch}" if resumed_epoch is not None else ""
    return (f"training an SCGAN (preset {cfg.preset}: {m.image_size} px{head}, augmentation {augmentation}) on "
            f"{n_train} normal images: {epochs} epochs of {per_epoch} steps of batch {batch} ({epochs * per_epoch} "
            f"steps){resumed} on {cfg.runtime.accelerator}; {n_val} validation images calibrate it after each epoch")


def build_trainer(cfg: Config, output_dir: Path, progress: bool = True, callbacks: list | None = None,
                  enable_logging: bool = True, resumed_epoch: int | None = None,
                  epochs: int | None = None) -> L.Trainer:
    """The Lightning Trainer for a run: checkpoints (last + every k epochs), CSV/TensorBoard logs."""
    ckpt_dir = output_dir / "checkpoints"
    # "last" as the one kept checkpoint, rewritten every epoch. (save_last=True with save_top_k=0 writes
    # last.ckpt only when training ends (Lightning 2.6), leaving an interrupted run nothing to resume.)
    cbs: list = [ModelCheckpoint(dirpath=str(ckpt_dir), filename="last", save_top_k=1, every_n_epochs=1,
                                 enable_version_counter=False)]
    if cfg.train.checkpoint_every > 0:
        # mode is unused without a monitor; "max" only keeps this callback's state key apart from the "last"
        # one's, which Lightning requires and which would otherwise clash when checkpoint_every = 1.
        cbs.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                                   save_top_k=-1, every_n_epochs=cfg.train.checkpoint_every,
                                   enable_version_counter=False,
                                   mode="max" if cfg.train.checkpoint_every == 1 else "min"))
    cbs.append(FiniteModelGuard(ckpt_dir))
    cbs += list(callbacks or [])
    if progress and not is_terminal():  # a log file gets one line per epoch, not a bar's redraws
        cbs.append(EpochLines())
    t, rt = cfg.train, cfg.runtime
    sync_bn = cfg.train.sync_batchnorm
    if sync_bn and rt.accelerator == "cpu":
        raise ValueError("sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
                         "use sync_batchnorm=false or --accelerator gpu")
    check_devices(rt.accelerator, rt.devices)
    return L.Trainer(
        max_epochs=epochs or t.epochs, accelerator=rt.accelerator, devices=rt.devices,
        strategy=resolve_strategy(rt.strategy),
        sync_batchnorm=sync_bn,
        precision=rt.precision, callbacks=cbs, plugins=[AtomicCheckpointIO()],
        logger=_loggers(output_dir, resumed_epoch) if enable_logging else False,
        default_root_dir=str(output_dir), use_distributed_sampler=False, enable_progress_bar=progress,
        num_sanity_val_steps=0, log_every_n_steps=1, enable_model_summary=False, deterministic=False,
    )


@dataclass
class PreparedRun:
    """What a training run is made of, ready for ``trainer.fit(module, datamodule=datamodule)``."""

    module: SCGANModule
    datamodule: SCGANDataModule
    trainer: L.Trainer
    train_set: Dataset  # the datamodule's training split, already loaded
    augmentation: str  # the resolved augmentation name ("auto" mapped by the category's kind)


def prepare_run(cfg: Config, output_dir: Path, *, progress: bool = True, callbacks: list | None = None,
                enable_logging: bool = True, resumed_epoch: int | None = None) -> PreparedRun:
    """Seed, load the training and validation splits, build the module and the Trainer (what :func:`train`
    fits, and what ``benchmarks/bench_speed.py`` times)."""
    seed_everything(cfg.seed)
    dm = SCGANDataModule(cfg)
    train_ds = dm.dataset("train")
    dm.dataset("val")
    augmentation = resolve_augmentation(cfg.augment.name, train_ds.kind)
    module = SCGANModule(cfg.to_dict(), augmentation)
    # Lightning's INFO lines (hardware summary, tips) drown the progress bar; warnings still show.
    # Its SIGTERM handler logs INFO lines of its own; our one line (TrainingStopped) says it all.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.signal_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = build_trainer(cfg, output_dir, progress=progress, callbacks=callbacks, enable_logging=enable_logging,
                            resumed_epoch=resumed_epoch, epochs=planned_epochs(cfg, len(train_ds)))
    return PreparedRun(module, dm, trainer, train_ds, augmentation)


def train_gan(cfg: Config, output_dir: Path, resume: str | Path | None, progress: bool,
              callbacks: list | None) -> TrainResult:
    """Fit an SCGAN into ``output_dir`` (claimed by :func:`scgan.training.fit.train`): the whole Lightning run."""
    ckpt_path = resolve_resume(resume, output_dir)  # checked before the (possibly slow) data loading
    resumed_epoch = _checkpoint_epoch(ckpt_path, cfg) if ckpt_path is not None else None
    start = time.time()
    run = prepare_run(cfg, output_dir, progress=progress, callbacks=callbacks, resumed_epoch=resumed_epoch)
    module, dm, trainer = run.module, run.datamodule, run.trainer
    train_ds, augmentation = run.train_set, run.augmentation
    if trainer.is_global_zero:  # on stdout: the command's own account, not progress (stderr keeps errors one line)
        print(plan_line(cfg, len(train_ds), len(dm.dataset("val")), augmentation, resumed_epoch), flush=True)
    with warnings.catch_warnings():
        if ckpt_path is not None:  # a resumed run writes into its own folders on purpose
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*(LeafSpec|TreeSpec).*")
        sigint = signal.getsignal(signal.SIGINT)
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
        except SystemExit as e:  # Lightning turns SIGTERM and Ctrl-C into SystemExit: a silent exit 0 or 1
            if not trainer.interrupted:
                raise
            with contextlib.suppress(ValueError, TypeError):  # after Ctrl-C Lightning leaves SIGINT ignored
                signal.signal(signal.SIGINT, sigint)
            raise TrainingStopped.at(trainer, isinstance(e, SIGTERMException), output_dir / "checkpoints") from None
        except DiskFullError as e:
            raise DiskFullError(e.errno, f"{e.strerror}; then continue with --resume auto") from None
    wall = time.time() - start
    last = output_dir / "checkpoints" / "last.ckpt"
    model_path = None
    if trainer.is_global_zero:
        cause = nonfinite_cause(module.calibration, module.parts())
        if cause is not None:
            raise diverged_error(cause, trainer.current_epoch, trainer.global_step, output_dir / "checkpoints")
        facts = dict(epoch=trainer.current_epoch, global_step=trainer.global_step,
                     selection="last epoch (no model selection)", d_resets=module.d_resets,
                     resumed_from=str(ckpt_path) if ckpt_path else None)
        model_path = write_run(output_dir, cfg, module.parts(), module.calibration, train_ds, len(dm.dataset("val")),
                               wall, augmentation=augmentation, **facts)
    return TrainResult(output_dir, model_path, last, trainer.current_epoch, wall)
