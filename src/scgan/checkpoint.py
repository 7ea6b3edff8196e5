"""Model files: state_dicts + config + calibration, written atomically, loaded with ``weights_only=True``.

Two kinds of file load here: our slim model file (``model.pt``, written at the end of training, what
``scgan test``/``predict``/``export`` want) and Lightning's training checkpoints (``last.ckpt``), which
carry the same config and calibration. Neither is ever unpickled with arbitrary objects.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scgan import __version__
from scgan.calibration.stats import Calibration, preference_order
from scgan.config import MODEL_FORMAT, MODEL_FORMAT_VERSION, Config, migrate_config, validate
from scgan.model.networks import Generator, build_generator, build_head
from scgan.model.scorer import SCORE_NAMES, Scorer, build_scorer
from scgan.utils.atomic import atomic_write_with


class CheckpointError(ValueError):
    """A file that is missing, not a checkpoint, unsafe, or from an incompatible config/version."""


@dataclass
class LoadedModel:
    """Everything needed to score images."""

    config: Config
    generator: Generator
    calibration: Calibration | None
    augmentation: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    seg_head: torch.nn.Module | None = None  # the learned anomaly head (model.head = seg)

    @property
    def default_score(self) -> str:
        """The score that drives decisions: the config's, with "auto" resolved by the calibration."""
        name = self.config.score.default_score
        if self.calibration is not None:
            return self.calibration.resolve(name)
        return preference_order(SCORE_NAMES)[0] if name == "auto" else name

    def scorer(self) -> Scorer:
        """The model's scoring graph in eval mode, with the calibration's smoothing."""
        return build_scorer(self.config, self.generator, calibration=self.calibration, seg_head=self.seg_head).eval()


def save_model(path: str | Path, generator: Generator, config: Config, calibration: Calibration | None,
               augmentation: str, meta: dict[str, Any] | None = None, seg_head: torch.nn.Module | None = None) -> Path:
    """Write the slim model file atomically (a crash mid-write leaves any previous file intact)."""
    obj = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "scgan_version": __version__,
        "config": config.identity(),  # runtime settings are where it ran, not what the model is
        "augmentation": augmentation,
        "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "calibration": calibration.to_dict() if calibration else None,
        **({"seg_head": {k: v.detach().cpu() for k, v in seg_head.state_dict().items()}} if seg_head is not None else {}),
        "meta": dict(meta or {}),
    }
    path = Path(path)
    atomic_write_with(path, lambda f: torch.save(obj, f))
    return path


def read_torch_file(path: str | Path, mmap: bool = False) -> dict:
    """A dict saved with torch.save, read with ``weights_only=True``; CheckpointError for anything else."""
    return _safe_load(Path(path), mmap)


def _safe_load(path: Path, mmap: bool = False) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # A named class or function (GLOBAL) or an object built from one is what could run code; any
        # other refusal (an unknown opcode, a bad length) means the bytes are not a torch.save file.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found or re.search(r"allowlisted|reduce for", str(e)):
            what = found.group(1) if found else "an object that is not a tensor or plain data"
            raise CheckpointError(
                f"refusing to load {path}: it holds {what}, not only tensors and plain data, "
                "so unpickling it could run code"
            ) from None
        raise CheckpointError(
            f"{path} is not an scgan checkpoint, or it is damaged (the safe loader cannot parse it)"
        ) from None
    # Foreign bytes make the unpickler fail in many ways (RuntimeError, EOFError, IndexError on a text file ...).
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not an scgan checkpoint, or it is damaged ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not an scgan checkpoint (it holds a {type(obj).__name__})")
    return obj


def _config_from(raw: Any, path: Path) -> Config:
    try:
        raw = migrate_config(raw)  # a file older than a setting had its older value
        if isinstance(raw, dict):
            raw.pop("runtime", None)  # where it was trained is no part of the model
        cfg = Config.from_dict(raw)
        validate(cfg)
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} was written with a config this scgan {__version__} cannot use: {e}") from None
    return cfg


def load_model(path: str | Path) -> LoadedModel:
    """Load a model file or a Lightning checkpoint of scgan, safely (``weights_only=True``).

    Every problem with the file's content is a CheckpointError that names the file.
    """
    path = Path(path)
    obj = _safe_load(path)
    try:
        return _parse_model(obj, path)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        what = f"the entry {e} is missing" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise CheckpointError(f"{path} is damaged or was edited by hand ({what}); use a model file written by "
                              "'scgan train'") from None


def _parse_model(obj: dict, path: Path) -> LoadedModel:
    """The LoadedModel in a safely loaded checkpoint dict."""
    if obj.get("format") == MODEL_FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has model format version {version!r}, newer than this scgan {__version__} reads "
                f"({MODEL_FORMAT_VERSION}); upgrade scgan"
            )
        cfg = _config_from(obj.get("config"), path)
        state, cal, aug, meta = obj["generator"], obj.get("calibration"), obj.get("augmentation", ""), obj.get("meta", {})
        head_state = obj.get("seg_head")
    elif "state_dict" in obj and isinstance(obj.get("hyper_parameters"), dict) and "config" in obj["hyper_parameters"]:
        hp = obj["hyper_parameters"]
        cfg = _config_from(hp["config"], path)
        state = {k[len("generator."):]: v for k, v in obj["state_dict"].items() if k.startswith("generator.")}
        head_state = {k[len("seg_head."):]: v for k, v in obj["state_dict"].items() if k.startswith("seg_head.")} or None
        cal, aug = obj.get("scgan_calibration"), hp.get("augmentation", "")
        meta = {"epoch": obj.get("epoch"), "global_step": obj.get("global_step"), "source": "lightning checkpoint"}
    else:
        raise CheckpointError(f"{path} is a PyTorch file but not an scgan checkpoint (no scgan config inside)")
    generator, seg_head = build_generator(cfg.model), build_head(cfg.model)
    if (seg_head is None) != (head_state is None):
        raise CheckpointError(f"{path}: its config says head={cfg.model.head!r}, but the file "
                              f"{'lacks' if head_state is None else 'also holds'} the head's weights")
    try:
        generator.load_state_dict(state, strict=True)
        if seg_head is not None:
            seg_head.load_state_dict(head_state, strict=True)
            seg_head.eval()
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: the weights do not match the network its config describes — written by a different "
            f"version? ({str(e).splitlines()[0][:200]})"
        ) from None
    generator.eval()
    calibration = Calibration.from_dict(cal) if cal else None
    return LoadedModel(config=cfg, generator=generator, calibration=calibration, augmentation=str(aug),
                       meta=dict(meta or {}), path=path, seg_head=seg_head)
