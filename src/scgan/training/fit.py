"""Train SCGAN on one category: Lightning Trainer set-up, checkpoints, logs, the final model file."""
from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from scgan.checkpoint import save_model
from scgan.config import Config, to_yaml, validate
from scgan.data.augment import resolve_augmentation
from scgan.seed import seed_everything
from scgan.training.datamodule import SCGANDataModule
from scgan.training.module import SCGANModule
from scgan.utils.atomic import atomic_write_text
from scgan.utils.runinfo import run_info

MODEL_FILE = "model.pt"


@dataclass
class TrainResult:
    """Where a training run left its files."""

    output_dir: Path
    model_path: Path | None  # None on non-zero ranks
    last_checkpoint: Path
    epochs: int
    wall_time_s: float


def _loggers(output_dir: Path) -> list:
    loggers: list = [CSVLogger(save_dir=str(output_dir), name="logs", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401  (optional)

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version=""))
    except ImportError:
        pass
    return loggers


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".scgan-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to output folder {path}: {e.strerror or e}") from None


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


def build_trainer(cfg: Config, output_dir: Path, progress: bool = True, callbacks: list | None = None,
                  enable_logging: bool = True) -> L.Trainer:
    """The Lightning Trainer for a run: checkpoints (last + every k epochs), CSV/TensorBoard logs."""
    ckpt_dir = output_dir / "checkpoints"
    cbs: list = [ModelCheckpoint(dirpath=str(ckpt_dir), filename="last-epoch", save_last=True, save_top_k=0,
                                 every_n_epochs=1, enable_version_counter=False)]
    if cfg.train.checkpoint_every > 0:
        cbs.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:04d}", auto_insert_metric_name=False,
                                   save_top_k=-1, every_n_epochs=cfg.train.checkpoint_every,
                                   enable_version_counter=False))
    cbs += list(callbacks or [])
    t = cfg.train
    return L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        precision=t.precision, callbacks=cbs, logger=_loggers(output_dir) if enable_logging else False,
        default_root_dir=str(output_dir), use_distributed_sampler=False, enable_progress_bar=progress,
        num_sanity_val_steps=0, log_every_n_steps=1, enable_model_summary=False, deterministic=False,
    )


def train(cfg: Config, output_dir: str | Path, resume: str | Path | None = None, progress: bool = True,
          callbacks: list | None = None) -> TrainResult:
    """Train on cfg.data's normal images; write checkpoints, logs, config.yaml and model.pt to output_dir."""
    validate(cfg)
    if not cfg.data.root:
        raise ValueError("no dataset root given: pass --root (or set data.root)")
    output_dir = Path(output_dir)
    _check_writable(output_dir)
    start = time.time()
    seed_everything(cfg.train.seed)
    dm = SCGANDataModule(cfg)
    train_ds = dm.dataset("train")
    dm.dataset("val")
    augmentation = resolve_augmentation(cfg.augment.name, train_ds.kind)
    module = SCGANModule(cfg.to_dict(), augmentation)
    ckpt_path = resolve_resume(resume, output_dir)
    # Lightning's INFO lines (hardware summary, tips) drown the progress bar; warnings still show.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = build_trainer(cfg, output_dir, progress=progress, callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*(LeafSpec|TreeSpec).*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    wall = time.time() - start
    last = output_dir / "checkpoints" / "last.ckpt"
    model_path = None
    if trainer.is_global_zero:
        meta = run_info(
            category=train_ds.category, kind=train_ds.kind, dataset=cfg.data.dataset, epoch=trainer.current_epoch,
            global_step=trainer.global_step, seed=cfg.train.seed, selection="last epoch (no model selection)",
            n_train=len(train_ds), n_val=len(dm.dataset("val")), d_resets=module.d_resets,
            train_wall_time_s=round(wall, 2), resumed_from=str(ckpt_path) if ckpt_path else None,
        )
        model_path = save_model(output_dir / MODEL_FILE, module.generator, cfg, module.calibration, augmentation, meta)
        atomic_write_text(output_dir / "config.yaml", to_yaml(cfg))
        atomic_write_text(output_dir / "train_summary.json", json.dumps(meta, indent=2))
    return TrainResult(output_dir, model_path, last, trainer.current_epoch, wall)
