"""``train``: fit a model of any kind on the normal images of one category into an output folder.

An SCGAN trains with Lightning (``scgan.training.gan``); a feature model is fitted in one pass, without
epochs (``scgan.training.features``). Either way the folder is claimed first (a run there is continued,
replaced or refused; a second training into it is refused) and ends with ``model.pt``.
"""
from __future__ import annotations

from pathlib import Path

from scgan.config import Config
from scgan.models.checks import check_config
from scgan.training.outdir import claim_output
from scgan.training.result import TrainResult
from scgan.utils.atomic import writable_dir


def train(cfg: Config, output_dir: str | Path, resume: str | Path | None = None, progress: bool = True,
          callbacks: list | None = None, overwrite: bool = False) -> TrainResult:
    """Fit cfg's model on cfg.data's normal images; write model.pt, config.yaml, train_summary.json (and, for an
    SCGAN, checkpoints and logs) to output_dir.

    A folder that holds a run is continued (``resume``, SCGAN only), replaced (``overwrite``: its run files are
    deleted first) or refused; the folder is locked against a second training for the whole run.
    """
    check_config(cfg)
    if not cfg.data.root:
        raise ValueError("no dataset root given: pass --root (or set data.root)")
    if cfg.data.dataset != "folder" and not cfg.data.category:
        raise ValueError(f"no category given: pass --category (or set data.category) naming a category folder "
                         f"under {cfg.data.root}")
    if cfg.model.kind != "scgan":
        if resume is not None or callbacks:
            raise ValueError(f"a {cfg.model.kind} model is fitted in one pass, without epochs: there is nothing to "
                             "resume (use --overwrite to fit it again) and no Lightning callback to call")
        rt = cfg.runtime
        if str(rt.devices) != "1" or rt.strategy != "auto" or rt.accelerator not in ("cpu", "auto"):
            raise ValueError(f"a {cfg.model.kind} model is fitted in one CPU process; --accelerator, --devices and "
                             "--strategy train the SCGAN presets (--preset scgan, gpu, cpu or paper)")
    output_dir = writable_dir(Path(output_dir))
    with claim_output(output_dir, resume, overwrite, resumable=cfg.model.kind == "scgan"):
        if cfg.model.kind == "scgan":
            from scgan.training.gan import train_gan

            return train_gan(cfg, output_dir, resume, progress, callbacks)
        from scgan.training.features import fit_features

        return fit_features(cfg, output_dir, progress)
