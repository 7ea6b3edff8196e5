"""Typed configuration: dataclasses with commented defaults, named presets, YAML and key=value overrides.

A run is described by one :class:`Config`. Presets (``paper``, ``cpu``) are functions returning a
Config; a YAML file (nested by section, or flat) and then ``key=value`` overrides are applied on top.
Keys may be written ``section.key`` or just ``key`` when the name is unique across sections.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    image_size: int = 256  # S: input side in pixels, a power of two >= 32 (paper: 256)
    nz: int = 100  # latent channels
    base_channels: int = 64  # channels of the first encoder block; doubled per block
    max_channels: int | None = None  # cap on channels; None = GANomaly's uncapped doubling (2048 at S=256)
    attention: bool = True  # MS-CAM after each spatial block of encoder1 (Struc3/4 on, Struc1/2 off)
    reduction: int = 4  # MS-CAM bottleneck ratio r
    # Decoder output = output_scale * tanh (SPEC, paper: 1.0). > 1 lets pure white/black pixels be reached
    # at a finite pre-activation; see docs/reproduction.md "Saturated pixels".
    output_scale: float = 1.0


@dataclass
class LossConfig:
    w_enc: float = 1.0  # alpha_1, latent consistency
    w_con: float = 40.0  # alpha_2, L1 restoration
    w_adv: float = 1.0  # alpha_3, adversarial
    w_ssim: float = 40.0  # alpha_4, 1 - SSIM (0 = Struc1/3 of the paper's ablation)
    # "bce": L_adv = -log D(x^); "feature": GANomaly's feature matching, mean (f(x) - f(x^))^2 over D's
    # last feature map. See docs/reproduction.md for why the presets use "feature".
    adv_type: str = "feature"
    con_target: str = "clean"  # "clean": restore the un-augmented image; "augmented": reconstruct the input


@dataclass
class AugmentConfig:
    name: str = "auto"  # "auto" = copypaste_color for textures, copypaste for objects; or any AUGMENTATIONS key
    n_patches: int = 30  # N (paper ablation: 10, 30, 50, 100)
    patch_area: float = 0.01  # each patch's share of the image area


@dataclass
class DataConfig:
    dataset: str = "mvtec"  # mvtec | btad | folder
    root: str = ""  # dataset root (for mvtec/btad: the folder holding the categories)
    category: str = ""  # MVTec category or BTAD product ("01"); ignored for folder
    val_fraction: float = 0.1  # share of normal training images held out for normalisation/threshold
    split_seed: int = 0  # seed of the train/validation split (independent of the training seed)
    skip_bad_images: bool = False  # skip unreadable images with a counted warning instead of failing
    require_masks: bool = True  # False: evaluate image-level only when masks are missing
    num_workers: int = 0  # DataLoader workers; images are cached in memory, so 0 is usually fastest


@dataclass
class TrainConfig:
    epochs: int = 400
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    checkpoint_every: int = 0  # also keep epoch-k checkpoints every k epochs (0 = only last)
    accelerator: str = "cpu"  # passed to Lightning: cpu | gpu | auto
    devices: int | str = 1
    strategy: str = "auto"  # e.g. ddp
    precision: str = "32-true"  # e.g. bf16-mixed (CPU/GPU), 16-mixed (GPU)
    d_reset_threshold: float = 1e-5  # re-initialise D when its loss falls below this (GANomaly)
    channels_last: bool = False  # memory format for conv speed on some back-ends
    sync_batchnorm: bool = False  # DDP: SyncBatchNorm across devices (GPU only); off = per-device statistics


@dataclass
class ScoreConfig:
    beta: float = 0.8  # AS = beta * L_con + (1 - beta) * L_enc
    # Gaussian smoothing of anomaly maps, in pixels at S: a number (0 = none), null = S / 64, or "auto" =
    # the one of S / 64 x (0, 0.5, 1, 2, 4) whose maps best locate synthetic defects pasted into normal
    # validation images (pixel AUROC; ties go to S / 64) — chosen per model, without test images. Not the
    # default: on MVTec bottle it chose 0.5 px and lowered pixel AUROC (docs/reproduction.md).
    sigma: float | str | None = None
    # Which named score drives decisions and the top-level metrics: a score name (as, l_con, l_enc,
    # map_max) or "auto" = the one that best separates normal validation images from the same images
    # with synthetic defects (confetti, `selection_patches` patches) — chosen per model, without test images.
    default_score: str = "auto"
    selection_patches: int = 3
    threshold_quantile: float = 0.99  # threshold = this quantile of normal validation scores
    eval_batch_size: int = 32


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    preset: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Inverse of to_dict; unknown keys raise ValueError."""
        cfg = cls()
        apply_mapping(cfg, d)
        return cfg


SECTIONS = ("model", "loss", "augment", "data", "train", "score")

# Settings added after runs and checkpoints had been written, with the value those were made with. A file
# that lacks one of them had that value; run-store keys leave it out at that value, so older runs keep them.
ADDED_LATER: dict[tuple[str, str], Any] = {("model", "output_scale"): 1.0}


def with_added_later(d: Any) -> Any:
    """A copy of a saved config dict with the ADDED_LATER settings it lacks filled in (anything else: as is)."""
    if not isinstance(d, dict):
        return d
    d = {**d}
    for (section, key), value in ADDED_LATER.items():
        if isinstance(d.get(section), dict) and key not in d[section]:
            d[section] = {**d[section], key: value}
    return d


def paper_preset() -> Config:
    """The paper's setting: S = 256, uncapped channels, batch 64, 400 epochs, alpha = (1, 40, 1, 40)."""
    return Config(preset="paper")


def cpu_preset() -> Config:
    """The paper's network at 64 px, narrower (base 32 channels, cap 256), 40 epochs: minutes on 2 CPU cores.

    One change beyond size: the decoder's output is 1.1 x tanh (``model.output_scale``; the paper preset keeps
    SPEC's plain Tanh).

    Measured on 2 CPU cores (see README "Presets"): about 3x cheaper per image than base 64 / cap 256,
    so a whole MVTec category trains and tests in a few minutes.
    """
    cfg = Config(preset="cpu")
    cfg.model.image_size = 64
    cfg.model.base_channels = 32
    cfg.model.max_channels = 256
    # 40 epochs leave pure white/black pixels restored short of +-1 by a plain Tanh (bottle: 0.92 at white,
    # a residual of 0.08 that the heat maps carry); 1.1 halves it. docs/reproduction.md, "Saturated pixels".
    cfg.model.output_scale = 1.1
    cfg.train.epochs = 40
    cfg.train.batch_size = 16
    return cfg


PRESETS = {"paper": paper_preset, "cpu": cpu_preset}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, with a clear error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{key}: cannot use {value!r} ({'; '.join(errors)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set ``section.key`` or a unique bare ``key`` on cfg, converting the value to the field's type."""
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"unknown config section {section!r} in {key!r}; sections: {', '.join(SECTIONS)}")
        owners = [section]
    else:
        name = key
        owners = [s for s in SECTIONS if name in _field_types(getattr(cfg, s))]
        if key == "preset":
            cfg.preset = str(value)
            return
    if not owners or name not in _field_types(getattr(cfg, owners[0])):
        raise ValueError(f"unknown config key {key!r}; run 'scgan config' to list the keys")
    if len(owners) > 1:
        raise ValueError(f"config key {key!r} is ambiguous; write one of {', '.join(o + '.' + name for o in owners)}")
    obj = getattr(cfg, owners[0])
    setattr(obj, name, _coerce(value, _field_types(obj)[name], f"{owners[0]}.{name}"))


def apply_mapping(cfg: Config, mapping: dict[str, Any]) -> Config:
    """Apply a nested ({section: {key: value}}) or flat ({key: value}) mapping."""
    for k, v in mapping.items():
        if k in SECTIONS:
            if not isinstance(v, dict):
                raise ValueError(f"config section {k!r} must be a mapping, got {type(v).__name__}")
            for kk, vv in v.items():
                set_value(cfg, f"{k}.{kk}", vv)
        else:
            set_value(cfg, k, v)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Turn ['epochs=40', 'model.image_size=64'] into a dict; values stay strings until coerced."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
    return out


def load_config(
    preset: str = "paper",
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Preset, then YAML file, then overrides; check the result."""
    cfg = get_preset(preset)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values")
        if "preset" in data:
            cfg = get_preset(str(data.pop("preset")))
        apply_mapping(cfg, data)
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        if "preset" in overrides:
            raise ValueError("choose the preset with --preset, not as an override")
        apply_mapping(cfg, overrides)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise ValueError with a useful message for settings that cannot work."""
    from scgan.models.networks import check_image_size

    check_image_size(cfg.model.image_size)
    if cfg.train.batch_size < 2:
        raise ValueError("batch_size must be >= 2: BatchNorm (and MS-CAM's global branch) cannot train on one image")
    if cfg.train.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.train.epochs}")
    if not 0.0 <= cfg.score.beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {cfg.score.beta}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if not 0.0 < cfg.score.threshold_quantile <= 1.0:
        raise ValueError(f"threshold_quantile must be in (0, 1], got {cfg.score.threshold_quantile}")
    from scgan.calibration import SCORE_NAMES

    valid_scores = ("auto", *SCORE_NAMES)
    if cfg.score.default_score not in valid_scores:
        raise ValueError(f"default_score must be one of {', '.join(valid_scores)}; got {cfg.score.default_score!r}")
    checks = [
        (cfg.score.sigma is None or cfg.score.sigma == "auto"
         or (not isinstance(cfg.score.sigma, str) and 0 <= cfg.score.sigma <= 64),
         f"sigma must be a number in [0, 64] (pixels), auto or null, got {cfg.score.sigma!r}"),
        (cfg.score.selection_patches >= 1, "selection_patches must be >= 1"),
        (cfg.score.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
        (cfg.train.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
        (cfg.data.num_workers >= 0, "num_workers must be >= 0"),
        (cfg.model.reduction >= 1, "reduction must be >= 1"),
        (1.0 <= cfg.model.output_scale <= 2.0, f"output_scale must be in [1, 2], got {cfg.model.output_scale!r}"),
        (cfg.model.nz >= 1, "nz must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if cfg.loss.adv_type not in ("bce", "feature"):
        raise ValueError(f"adv_type must be 'bce' or 'feature', got {cfg.loss.adv_type!r}")
    if cfg.loss.con_target not in ("clean", "augmented"):
        raise ValueError(f"con_target must be 'clean' or 'augmented', got {cfg.loss.con_target!r}")
    if cfg.augment.n_patches < 0 or not 0.0 < cfg.augment.patch_area < 1.0:
        raise ValueError("n_patches must be >= 0 and patch_area in (0, 1)")
    if cfg.data.dataset not in ("mvtec", "btad", "folder"):
        raise ValueError(f"dataset must be one of mvtec, btad, folder; got {cfg.data.dataset!r}")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
