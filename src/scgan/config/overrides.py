"""Applying settings to a Config: type coercion, ``key=value`` and YAML overrides, loading, printing.

Keys may be written ``section.key`` or just ``key`` when the name is unique across the config's sections. Old
keys (``train.precision``, ``model.kind``) are read at their new place (``runtime.precision``, ``kind``): see
migrations.MOVED. A setting of another kind of model than the config's is refused, on the command line and in a
YAML file alike; a YAML file's section of another kind that holds only that section's defaults (as every preset
file did when configs carried every kind's sections) is ignored, with one line saying so.
"""
from __future__ import annotations

import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from scgan.config.migrations import FORMER_DEFAULTS, move_keys, moved_key, old_layout_defects
from scgan.config.presets import get_preset, presets_of
from scgan.config.schema import KIND_SECTIONS, TOP_KEYS, Config, section_owner

log = logging.getLogger("scgan")


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


def _other_kind(cfg: Config, section: str, name: str | None = None) -> ValueError:
    """The error for a setting of another kind of model than cfg's."""
    kind = section_owner(section)
    what = f"{section}.{name}" if name else f"the {section} section"
    presets = ", ".join(f"--preset {p}" for p in presets_of(kind))
    return ValueError(f"{what} is a setting of the {kind} model, which this config's model (kind {cfg.kind}, preset "
                      f"{cfg.preset}) does not use; choose a {kind} preset ({presets or f'kind={kind}'}) or drop it")


def resolve_key(cfg: Config, key: str) -> tuple[str, str]:
    """(section, name) of ``section.key`` or a unique bare ``key`` (section "" for a top-level key); ValueError for
    an unknown or ambiguous key, or one of another kind of model than cfg's."""
    key = moved_key(key)
    if key in TOP_KEYS:
        return "", key
    sections = cfg.section_names()
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections:
            if section_owner(section) is not None:
                raise _other_kind(cfg, section, name)
            raise ValueError(f"unknown config section {section!r} in {key!r}; sections: {', '.join(sections)}")
        owners = [section]
    else:
        name = key
        owners = [s for s in sections if name in _field_types(getattr(cfg, s))]
        if not owners:
            others = [s for k in KIND_SECTIONS.values() for s, c in k.items() if name in _field_types(c())]
            if others:
                raise _other_kind(cfg, others[0], name)
    if not owners or name not in _field_types(getattr(cfg, owners[0])):
        raise ValueError(f"unknown config key {key!r}; run 'scgan config' to list the keys")
    if len(owners) > 1:
        raise ValueError(f"config key {key!r} is ambiguous; write one of {', '.join(o + '.' + name for o in owners)}")
    return owners[0], name


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set ``section.key`` or a unique bare ``key`` on cfg, converting the value to the field's type. Setting
    ``kind`` to another kind replaces the kind's sections with the new kind's defaults."""
    section, name = resolve_key(cfg, key)
    _assign(getattr(cfg, section) if section else cfg, section, name, value)


def _assign(obj: Any, section: str, name: str, value: Any) -> None:
    """Set field ``name`` of ``obj`` (a section, or the config itself for section ""), converting the value to
    the field's type; ValueError for a name the object has not."""
    key = f"{section}.{name}" if section else name
    types_ = _field_types(obj)
    if name not in types_:
        raise ValueError(f"unknown config key {key!r}; run 'scgan config' to list the keys")
    setattr(obj, name, _coerce(value, types_[name], key))


def apply_mapping(cfg: Config, mapping: dict[str, Any], source: str = "") -> Config:
    """Apply a nested ({section: {key: value}}) or flat ({key: value}) mapping (older layouts migrated); ``kind``
    first, since it chooses the sections the rest may set.

    ``source`` names a YAML file: there a section of another kind that holds only its defaults is ignored with one
    line; any other setting of another kind is refused, as on the command line."""
    mapping = move_keys(old_layout_defects(mapping) if source else mapping)
    kind_keys = [k for k in mapping if moved_key(k) == "kind"]
    for k in kind_keys:
        set_value(cfg, "kind", mapping[k])
    ignored = []
    for k, v in mapping.items():
        if k in kind_keys or v == {}:  # a section its moved keys left empty (train: {seed: 3})
            continue
        if isinstance(v, dict) and k not in cfg.section_names() and section_owner(k) is not None:
            changed = _first_change(k, v)
            if source and changed is None:
                ignored.append(k)
                continue
            raise _other_kind(cfg, k, changed or next(iter(v)))
        if isinstance(v, dict) and k in cfg.section_names():
            for kk, vv in v.items():
                set_value(cfg, f"{k}.{kk}", vv)
                if source and getattr(cfg, k).__dict__.get(kk) in FORMER_DEFAULTS.get((k, kk), ()):
                    log.warning("%s: %s.%s = %s was the default of an earlier release (today's: %s); kept as the file "
                                "says", source, k, kk, vv, getattr(type(getattr(cfg, k))(), kk))
        elif k in cfg.section_names():
            raise ValueError(f"config section {k!r} must be a mapping, got {type(v).__name__}")
        else:
            set_value(cfg, k, v)
    if ignored:
        log.warning("%s: ignored the %s section%s: settings of another kind of model than this config's (%s), at "
                    "their defaults", source, ", ".join(ignored), "s" if len(ignored) > 1 else "", cfg.kind)
    return cfg


# Score settings a preset chooses for its own kind, which another kind may not offer (a cross-fit, a score).
_KIND_SCORE_SETTINGS = ("threshold_source", "default_score")
# Scores that a setting of their kind's section turns on: with it off, a preset's choice of the score goes too.
_SCORE_SWITCHES = {"map_z": ("patchcore", "position_grid")}


def _score_settings_of_kind(cfg: Config, given: set[str]) -> None:
    """Where ``kind`` is not its preset's: each of ``_KIND_SCORE_SETTINGS`` that is still the preset's, chosen for the
    preset's own kind, goes back to the schema's default, which every kind offers, unless a source set it (its name
    in ``given``). Where it is, a default score that is still the preset's goes back likewise once the setting that
    computes it (``_SCORE_SWITCHES``) is off."""
    preset = get_preset(cfg.preset)
    if cfg.kind == preset.kind:
        score = cfg.score.default_score
        if "default_score" not in given and score == preset.score.default_score and score in _SCORE_SWITCHES:
            section, key = _SCORE_SWITCHES[score]
            if section in cfg.sections and not getattr(getattr(cfg, section), key):  # its switch turned off
                cfg.score.default_score = type(cfg.score)().default_score
        return
    for name in _KIND_SCORE_SETTINGS:
        if name not in given and getattr(cfg.score, name) == getattr(preset.score, name):
            setattr(cfg.score, name, getattr(type(cfg.score)(), name))


def _sets(cfg: Config, mapping: dict[str, Any], section: str, name: str) -> bool:
    """Whether ``mapping`` (nested or flat, keys moved) sets ``section.name``."""
    for k, v in mapping.items():
        if isinstance(v, dict):
            if k == section and name in v:
                return True
            continue
        try:
            if resolve_key(cfg, k) == (section, name):
                return True
        except ValueError:
            continue  # an unknown key: its own error comes when it is set
    return False


def _first_change(section: str, values: dict[str, Any]) -> str | None:
    """The first key of ``values`` that sets ``section`` (of whichever kind owns it) to other than its default (or a
    former default: migrations.FORMER_DEFAULTS), or that it has not; None when every value is a default."""
    schema = KIND_SECTIONS[section_owner(section)][section]
    default = schema()
    for k, v in values.items():
        fresh = schema()
        try:
            _assign(fresh, section, k, v)
        except ValueError:
            return k
        if fresh != default and getattr(fresh, k) not in FORMER_DEFAULTS.get((section, k), ()):
            return k
    return None


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
    set_by_file: set[str] = set()  # the file's sections of its kind: a kind= given after it would drop them
    score_given: set[str] = set()  # of _KIND_SCORE_SETTINGS, those the file or the overrides set
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
        apply_mapping(cfg, data, source=f"config file {path}")
        moved = move_keys(data)
        score_given = {n for n in _KIND_SCORE_SETTINGS if _sets(cfg, moved, "score", n)}
        set_by_file = {s for s in cfg.sections if isinstance(moved.get(s), dict) and moved[s]}
        given |= _train_keys(data)
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        if "preset" in overrides:
            raise ValueError("choose the preset with --preset, not as an override")
        kind_before = cfg.kind
        apply_mapping(cfg, overrides)
        score_given |= {n for n in _KIND_SCORE_SETTINGS if _sets(cfg, move_keys(overrides), "score", n)}
        if cfg.kind != kind_before and set_by_file:
            raise ValueError(f"kind={cfg.kind} on the command line would drop the {', '.join(sorted(set_by_file))} "
                             f"settings of config file {yaml_path} (a {kind_before} model's): set kind in the file")
        given |= _train_keys(overrides)
    _score_settings_of_kind(cfg, score_given)
    if "train" in cfg.sections and "epochs" in given and "steps" not in given:
        cfg.train.steps = 0
    cfg.validate()
    return cfg


def _train_keys(mapping: dict[str, Any]) -> set[str]:
    """The train-section keys a (nested or flat) mapping sets: {"epochs", ...}."""
    keys = {k.split(".", 1)[1] if k.startswith("train.") else k for k in mapping if k != "train"}
    if isinstance(mapping.get("train"), dict):
        keys |= set(mapping["train"])
    return keys


def to_yaml(cfg: Config) -> str:
    """Every setting as YAML, nested by section (``load_config(yaml_path=...)`` reads it back)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
