"""``train``: fit a model of any kind on the normal images of one category into an output folder.

Each kind of model registers its fitter here (:data:`FITTERS`): an SCGAN trains with Lightning
(``scgan.training.gan``); a PatchCore detector is fitted in one pass, without epochs (``scgan.training.patchcore``).
A kind may also register one that spreads its work over a Ray cluster (:data:`CLUSTER_FITTERS`, ``scgan train
--engine ray``). Either way the folder is claimed first (a run there is continued, replaced or refused; a second
training into it is refused) and ends with ``model.pt``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from scgan.config import Config
from scgan.config.presets import presets_of
from scgan.data.datasets import check_dataset_name
from scgan.models.checks import check_config
from scgan.models.registry import KINDS, get_kind
from scgan.training.cluster import RayEngine, fit_patchcore_ray
from scgan.training.fusion import fit_fusion
from scgan.training.gan_entry import fit_scgan
from scgan.training.outdir import claim_output
from scgan.training.patchcore import fit_patchcore
from scgan.training.result import TrainResult
from scgan.utils.atomic import writable_dir

# fitter(cfg, output_dir, resume=, progress=, callbacks=) -> TrainResult: fits into a folder train() has claimed.
Fitter = Callable[..., TrainResult]


FITTERS: dict[str, Fitter] = {"scgan": fit_scgan, "patchcore": fit_patchcore, "fusion": fit_fusion}
# The same with engine=RayEngine: fits whose work is spread over a Ray cluster (train(engine=...)).
CLUSTER_FITTERS: dict[str, Fitter] = {"patchcore": fit_patchcore_ray}


def register_fitter(kind: str, fitter: Fitter, cluster: Fitter | None = None) -> None:
    """Fit models of ``kind`` with ``fitter`` (a new kind registers its fitter beside its ModelKind), and on a Ray
    cluster with ``cluster`` (which takes ``engine=``), if it has one."""
    FITTERS[kind] = fitter
    if cluster is not None:
        CLUSTER_FITTERS[kind] = cluster


def train(cfg: Config, output_dir: str | Path, resume: str | Path | None = None, progress: bool = True,
          callbacks: list | None = None, overwrite: bool = False, engine: RayEngine | None = None) -> TrainResult:
    """Fit cfg's model on cfg.data's normal images; write model.pt, config.yaml, train_summary.json (and, for an
    SCGAN, checkpoints and logs) to output_dir.

    A folder that holds a run is continued (``resume``, a kind that resumes only), replaced (``overwrite``: its run
    files are deleted first) or refused; the folder is locked against a second training for the whole run.
    ``engine``: fit on a Ray cluster (a kind with a cluster fitter), joined before the folder is claimed.
    """
    check_config(cfg)
    kind = get_kind(cfg.kind)
    if cfg.kind not in FITTERS:
        raise ValueError(f"no fitter is registered for model kind {cfg.kind!r} (scgan.training.fit.register_fitter)")
    if not cfg.data.root:
        raise ValueError("no dataset root given: pass --root (or set data.root)")
    check_dataset_name(cfg.data.dataset)
    if cfg.data.dataset != "folder" and not cfg.data.category:
        raise ValueError(f"no category given: pass --category (or set data.category) naming a category folder "
                         f"under {cfg.data.root}")
    if resume is not None and not kind.resumable:
        raise ValueError(f"a {cfg.kind} model is fitted in one pass, without epochs: there is nothing to resume "
                         "(use --overwrite to fit it again)")
    rt = cfg.runtime
    if not kind.multi_device and (str(rt.devices) != "1" or rt.strategy != "auto"
                                  or rt.accelerator not in ("cpu", "auto")):
        presets = [p for name, k in KINDS.items() if k.multi_device for p in presets_of(name)]
        raise ValueError(f"a {cfg.kind} model is fitted in one CPU process; --accelerator, --devices and "
                         f"--strategy are for models fitted on devices (--preset {', '.join(presets)})")
    fitter = FITTERS[cfg.kind]
    if engine is not None:
        if cfg.kind not in CLUSTER_FITTERS:
            other = ("; it trains on several devices and machines with Lightning DDP instead (--devices N "
                     "--strategy ddp)") if kind.multi_device else ""
            raise ValueError(f"a {cfg.kind} model is not fitted on a Ray cluster (--engine ray){other}")
        engine.join()  # no cluster: one line, before the folder (and a run --overwrite would delete) is touched
        fitter = functools.partial(CLUSTER_FITTERS[cfg.kind], engine=engine)
    output_dir = writable_dir(Path(output_dir))
    with claim_output(output_dir, resume, overwrite, resumable=kind.resumable):
        return fitter(cfg, output_dir, resume=resume, progress=progress, callbacks=callbacks)
