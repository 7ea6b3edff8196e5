"""Model files: every kind's stored parts + config + calibration, written atomically, loaded with
``weights_only=True``; the one owner of the file's format, its versions and how older ones are read.

Two kinds of file load here: our slim model file (``model.pt``, written when a model is fitted, what
``scgan test``/``predict``/``export`` want) and Lightning's training checkpoints (``last.ckpt``) of an SCGAN,
which carry the same config and calibration. Neither is ever unpickled with arbitrary objects.

Format versions: 1 held the generator, the config (runtime settings in it) and the calibration; 2 added the
learned head's weights and left runtime settings out; 3 stores any kind's parts by name (``parts``), the kind,
and the input the model takes (``input``); 4 stores a config of the model's own kind only (``kind`` and ``seed`` at its
top, ``scgan.config.migrations`` reads the older layout). Older files are read as version 4 (:func:`_upgrade`), and a
scgan that reads at most version 3 says to upgrade instead of failing on a config key it does not know.

Two optional entries need no new version (a reader without them ignores them, a file without them loads):
``calibration_images``, the normal images the calibration was fitted on (uint8, as the model took them: what an update
re-fits it on; at most MAX_KEPT_CALIBRATION_IMAGES), and ``lineage``, the steps that made the file from earlier ones
(:mod:`scgan.artifacts.lineage`).
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scgan import __version__
from scgan.artifacts.finite import NonFiniteModelError, nonfinite_cause
from scgan.calibration.stats import Calibration, preference_order
from scgan.config import Config, config_from_dict, migrate_config
from scgan.data.io import InputSpec
from scgan.models.checks import check_config
from scgan.models.kind import ModelKind
from scgan.models.registry import get_kind
from scgan.utils.atomic import atomic_write_with

MODEL_FORMAT = "scgan-model"
MODEL_FORMAT_VERSION = 4


class CheckpointError(ValueError):
    """A file that is missing, not a checkpoint, unsafe, or from an incompatible config/version."""


@dataclass
class LoadedModel:
    """Everything needed to score images: the config, the kind's parts (networks, memory bank), the calibration."""

    config: Config
    parts: dict[str, nn.Module]
    calibration: Calibration | None
    augmentation: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    input: InputSpec | None = None  # what the fitted model takes (None: what its config gives)
    training_checkpoint: bool = False  # read from a Lightning checkpoint (optimiser states, loop counters)
    # The normal images the calibration was fitted on, uint8 (H, W, C) as the model took them: what re-fitting it
    # after an update rests on (None: a file written before they were kept).
    calibration_images: list[torch.Tensor] | None = None
    # How this file came to be, oldest step first (``scgan.artifacts.lineage``); empty for a freshly fitted model.
    lineage: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kind(self) -> ModelKind:
        return get_kind(self.config.kind)

    @property
    def input_spec(self) -> InputSpec:
        """How images are brought to this model (size rule and channels)."""
        return self.input or self.kind.input_spec(self.config)

    @property
    def score_names(self) -> tuple[str, ...]:
        return self.kind.score_names(self.config)

    @property
    def default_score(self) -> str:
        """The score that drives decisions: the config's, with "auto" resolved by the calibration."""
        name = self.config.score.default_score
        if self.calibration is not None:
            return self.calibration.resolve(name, self.kind.score_preference)
        return preference_order(self.score_names, self.kind.score_preference)[0] if name == "auto" else name

    def scorer(self, precision: str | None = None, channels_last: bool | None = None) -> nn.Module:
        """The model's scoring graph in eval mode, with the calibration's smoothing."""
        return self.kind.build_scorer(self.config, self.parts, calibration=self.calibration, precision=precision,
                                      channels_last=channels_last).eval()


# Calibration images a model file keeps for an update to recalibrate on: about 75 MB at 320 px. A fit on more keeps
# an evenly spread share of them (the split's order is already a seeded shuffle's sorted draw).
MAX_KEPT_CALIBRATION_IMAGES = 250


def kept_calibration_images(images: list) -> list:
    """The calibration images a model file keeps: all of them up to MAX_KEPT_CALIBRATION_IMAGES, else that many
    evenly spread over the list (the same ones every time)."""
    n = len(images)
    if n <= MAX_KEPT_CALIBRATION_IMAGES:
        return list(images)
    return [images[i] for i in np.linspace(0, n - 1, MAX_KEPT_CALIBRATION_IMAGES).round().astype(int)]


def save_model(path: str | Path, config: Config, parts: dict[str, nn.Module], calibration: Calibration | None,
               augmentation: str = "", meta: dict[str, Any] | None = None, input_spec: InputSpec | None = None,
               calibration_images: list | None = None, lineage: list[dict[str, Any]] | None = None) -> Path:
    """Write the slim model file atomically (a crash mid-write leaves any previous file intact).

    ``calibration_images``: the normal images (uint8 (H, W, C) arrays or tensors) the calibration was fitted on,
    kept so that an update can re-fit it (at most MAX_KEPT_CALIBRATION_IMAGES of them:
    :func:`kept_calibration_images`); ``lineage``: the steps that made this file from earlier ones.

    A model whose weights or calibration hold nan or infinite values is refused (NonFiniteModelError) before a
    byte is written: it would score nan and decide nothing.
    """
    cause = nonfinite_cause(calibration, parts)
    if cause is not None:
        raise NonFiniteModelError(f"refusing to write {path}: {cause}; a model with values that are not numbers "
                                  "cannot score or decide")
    obj = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "scgan_version": __version__,
        "kind": config.kind,
        "config": config.identity(),  # runtime settings are where it ran, not what the model is
        "input": (input_spec or get_kind(config.kind).input_spec(config)).to_dict(),
        "augmentation": augmentation,
        "parts": {name: {k: v.detach().cpu() for k, v in module.state_dict().items()}
                  for name, module in parts.items()},
        "calibration": calibration.to_dict() if calibration else None,
        "meta": dict(meta or {}),
    }
    if calibration_images is not None:  # optional entries: a reader that predates them ignores them
        # torch.tensor copies: read-only arrays (a memory-mapped image) are taken without torch's warning
        obj["calibration_images"] = [torch.tensor(np.asarray(im), dtype=torch.uint8)
                                     for im in kept_calibration_images(calibration_images)]
    if lineage:
        obj["lineage"] = [dict(step) for step in lineage]
    path = Path(path)
    atomic_write_with(path, lambda f: torch.save(obj, f))
    return path


def save_loaded(path: str | Path, loaded: LoadedModel, calibration: Calibration | None = None,
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``loaded`` as a model file, with another calibration and meta where given (its calibration images and
    lineage kept)."""
    return save_model(path, loaded.config, loaded.parts, calibration if calibration is not None else loaded.calibration,
                      loaded.augmentation, loaded.meta if meta is None else meta, input_spec=loaded.input_spec,
                      calibration_images=loaded.calibration_images, lineage=loaded.lineage)


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
        cfg = check_config(config_from_dict(raw))
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


def _upgrade(obj: dict, path: Path) -> dict:
    """A model file of any version (or a Lightning checkpoint of an SCGAN) as a version-3 dict."""
    if obj.get("format") == MODEL_FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has model format version {version!r}, newer than this scgan {__version__} reads "
                f"({MODEL_FORMAT_VERSION}); upgrade scgan"
            )
        if version >= 3:
            return obj
        parts = {"generator": obj["generator"], **({"seg_head": obj["seg_head"]} if obj.get("seg_head") else {})}
        return {**obj, "kind": "scgan", "parts": parts}
    if "state_dict" in obj and isinstance(obj.get("hyper_parameters"), dict) and "config" in obj["hyper_parameters"]:
        hp = obj["hyper_parameters"]
        parts: dict[str, dict] = {}
        for key, value in obj["state_dict"].items():
            name, _, rest = key.partition(".")
            if name in ("generator", "seg_head"):  # the discriminator is training's alone
                parts.setdefault(name, {})[rest] = value
        return {"kind": "scgan", "config": hp["config"], "parts": parts, "calibration": obj.get("scgan_calibration"),
                "augmentation": hp.get("augmentation", ""),
                "meta": {"epoch": obj.get("epoch"), "global_step": obj.get("global_step"),
                         "source": "lightning checkpoint"}}
    raise CheckpointError(f"{path} is a PyTorch file but not an scgan checkpoint (no scgan config inside)")


def _parse_model(obj: dict, path: Path) -> LoadedModel:
    """The LoadedModel in a safely loaded checkpoint dict."""
    training_checkpoint = obj.get("format") != MODEL_FORMAT
    obj = _upgrade(obj, path)
    cfg = _config_from(obj.get("config"), path)
    if obj.get("kind") != cfg.kind:
        raise CheckpointError(f"{path}: the file says kind {obj.get('kind')!r}, its config {cfg.kind!r}")
    try:
        parts = get_kind(cfg.kind).build_parts(cfg, obj["parts"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: the weights do not match the model its config describes ({str(e).splitlines()[0][:200]})"
        ) from None
    cal = Calibration.from_dict(obj["calibration"]) if obj.get("calibration") else None
    cause = nonfinite_cause(cal, parts)
    if cause is not None:  # it would score nan, or compare every score with a nan threshold: never "normal" by accident
        raise CheckpointError(f"{path} holds values that are not numbers ({cause}), so it cannot score or decide; "
                              "use the model file its training wrote, or train again")
    spec = InputSpec.from_dict(obj["input"]) if obj.get("input") else None
    images = obj.get("calibration_images")
    if images is not None and not all(isinstance(im, torch.Tensor) and im.dtype == torch.uint8 and im.ndim == 3
                                      for im in images):
        raise CheckpointError(f"{path}: its calibration images are not uint8 (H, W, C) arrays; the file was edited")
    return LoadedModel(config=cfg, parts=parts, calibration=cal, augmentation=str(obj.get("augmentation", "")),
                       meta=dict(obj.get("meta") or {}), path=path, input=spec,
                       training_checkpoint=training_checkpoint, calibration_images=images,
                       lineage=[dict(step) for step in obj.get("lineage") or []])
