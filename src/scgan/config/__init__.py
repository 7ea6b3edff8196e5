"""Typed configuration: the schema, the presets, overrides (YAML and key=value), migrations of old configs.

A config holds the settings every model shares and its own kind's sections only. ``runtime`` settings (devices,
precision, loader workers) are kept apart from the model's identity. Nothing here knows a network: the names a
setting takes are checked by ``scgan.models.checks.check_config``.
"""
from scgan.config.commented import commented_yaml
from scgan.config.migrations import ADDED_LATER, MOVED, legacy_layout, migrate_config
from scgan.config.overrides import apply_mapping, config_from_dict, load_config, parse_overrides, set_value, to_yaml
from scgan.config.presets import PRESETS, cpu_preset, default_preset, get_preset, gpu_preset, paper_preset, scgan_preset
from scgan.config.schema import (
    KIND_SECTIONS,
    MIXTURE_SOURCES,
    PRECISIONS,
    SHARED_SECTIONS,
    TOP_KEYS,
    AugmentConfig,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    PatchCoreConfig,
    RuntimeConfig,
    ScoreConfig,
    TrainConfig,
    kind_sections,
    one_of,
    register_kind_sections,
    section_owner,
)

__all__ = ["ADDED_LATER", "KIND_SECTIONS", "MIXTURE_SOURCES", "MOVED", "PRECISIONS", "PRESETS", "SHARED_SECTIONS",
           "TOP_KEYS", "AugmentConfig", "Config", "DataConfig", "LossConfig", "ModelConfig", "PatchCoreConfig",
           "RuntimeConfig", "ScoreConfig", "TrainConfig", "apply_mapping", "commented_yaml", "config_from_dict",
           "cpu_preset", "default_preset", "get_preset", "gpu_preset", "kind_sections", "legacy_layout",
           "load_config", "migrate_config", "one_of", "paper_preset", "parse_overrides", "register_kind_sections",
           "scgan_preset", "section_owner", "set_value", "to_yaml"]
