"""Applying settings to a Config: type coercion, ``key=value`` and YAML overrides, loading, printing.

Keys may be written ``section.key`` or just ``key`` when the name is unique across sections. Old keys
(``train.precision``) are read at their new place (``runtime.precision``): see migrations.MOVED.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from scgan.config.migrations import move_keys, moved_key
from scgan.config.presets import get_preset
from scgan.config.schema import KIND_SECTIONS, SECTIONS, SHARED_KEYS, Config


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
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        return str(value)
    if origin is list:  # a YAML list, or "1,0.5,0.25" from the command line
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value  # "": []
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = [items]  # one number: a list of one
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(v.strip() if isinstance(v, str) else v, item_type, key) for v in items]
    return value


def resolve_key(cfg: Config, key: str) -> tuple[str, str]:
    """(section, name) of ``section.key`` or a unique bare ``key``; ValueError for an unknown or ambiguous one."""
    key = moved_key(key)
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"unknown config section {section!r} in {key!r}; sections: {', '.join(SECTIONS)}")
        owners = [section]
    else:
        name = key
        owners = [s for s in SECTIONS if name in _field_types(getattr(cfg, s))]
    if not owners or name not in _field_types(getattr(cfg, owners[0])):
        raise ValueError(f"unknown config key {key!r}; run 'scgan config' to list the keys")
    if len(owners) > 1:
        raise ValueError(f"config key {key!r} is ambiguous; write one of {', '.join(o + '.' + name for o in owners)}")
    return owners[0], name


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set ``section.key`` or a unique bare ``key`` on cfg, converting the value to the field's type."""
    if key == "preset":
        cfg.preset = str(value)
        return
    section, name = resolve_key(cfg, key)
    obj = getattr(cfg, section)
    setattr(obj, name, _coerce(value, _field_types(obj)[name], f"{section}.{name}"))


def check_kind_keys(cfg: Config, keys: Iterable[str]) -> None:
    """ValueError for a key among ``keys`` (given on the command line) that cfg's kind of model does not use:
    ``image_size=64`` on a feature model would otherwise change nothing, silently."""
    for key in keys:
        section, name = resolve_key(cfg, key)
        for kind, sections in KIND_SECTIONS.items():
            if kind != cfg.model.kind and section in sections and name not in SHARED_KEYS.get(section, ()):
                raise ValueError(f"{section}.{name} is a setting of the {kind} model, which this config's model "
                                 f"(model.kind={cfg.model.kind}, preset {cfg.preset}) does not use; choose a "
                                 f"{kind} preset (--preset {'scgan' if kind == 'scgan' else 'default'}) or drop it")


def apply_mapping(cfg: Config, mapping: dict[str, Any]) -> Config:
    """Apply a nested ({section: {key: value}}) or flat ({key: value}) mapping (older layouts migrated)."""
    for k, v in move_keys(mapping).items():
        if k in SECTIONS:
            if not isinstance(v, dict):
                raise ValueError(f"config section {k!r} must be a mapping, got {type(v).__name__}")
            for kk, vv in v.items():
                set_value(cfg, f"{k}.{kk}", vv)
        else:
            set_value(cfg, k, v)
    return cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Inverse of ``Config.to_dict`` (older layouts migrated); unknown keys raise ValueError."""
    return apply_mapping(Config(), d)


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
    """Preset, then YAML file, then overrides; check the result.

    Setting ``epochs`` without ``steps`` means epochs: a preset's step budget (``train.steps``) is then dropped.
    """
    cfg = get_preset(preset)
    given: set[str] = set()
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
        given |= _train_keys(data)
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        if "preset" in overrides:
            raise ValueError("choose the preset with --preset, not as an override")
        apply_mapping(cfg, overrides)
        given |= _train_keys(overrides)
        check_kind_keys(cfg, [k for k in _flat_keys(overrides) if k != "data.root"])
    if "epochs" in given and "steps" not in given:
        cfg.train.steps = 0
    cfg.validate()
    return cfg


def _flat_keys(mapping: dict[str, Any]) -> list[str]:
    """The keys a (nested or flat) mapping sets, as ``section.key`` or bare ``key``."""
    return [f"{k}.{kk}" for k, v in mapping.items() if k in SECTIONS and isinstance(v, dict) for kk in v] + \
        [k for k, v in mapping.items() if not (k in SECTIONS and isinstance(v, dict))]


def _train_keys(mapping: dict[str, Any]) -> set[str]:
    """The train-section keys a (nested or flat) mapping sets: {"epochs", ...}."""
    keys = {k.split(".", 1)[1] if k.startswith("train.") else k for k in mapping if k != "train"}
    if isinstance(mapping.get("train"), dict):
        keys |= set(mapping["train"])
    return keys


def to_yaml(cfg: Config) -> str:
    """Every setting as YAML, nested by section (``load_config(yaml_path=...)`` reads it back)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
