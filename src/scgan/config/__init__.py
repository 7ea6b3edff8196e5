"""Typed configuration: the schema, the presets, overrides (YAML and key=value), migrations of old configs.

``runtime`` settings (devices, precision, loader workers) are kept apart from the model's identity. Nothing here
knows a network: the names a setting takes are checked by ``scgan.models.checks.check_config``.
"""
from scgan.config.commented import commented_yaml
from scgan.config.migrations import ADDED_LATER, MOVED, migrate_config
from scgan.config.overrides import apply_mapping, config_from_dict, load_config, parse_overrides, set_value, to_yaml
from scgan.config.presets import PRESETS, cpu_preset, default_preset, get_preset, gpu_preset, paper_preset, scgan_preset
from scgan.config.schema import (
                                    IDENTITY_SECTIONS,
                                    KIND_SECTIONS,
                                    MIXTURE_SOURCES,
                                    PRECISIONS,
                                    SECTIONS,
                                    AugmentConfig,
                                    Config,
                                    DataConfig,
                                    LossConfig,
                                    ModelConfig,
                                    PatchCoreConfig,
                                    RuntimeConfig,
                                    ScoreConfig,
                                    TrainConfig,
)

__all__ = ["ADDED_LATER", "IDENTITY_SECTIONS", "KIND_SECTIONS", "MIXTURE_SOURCES", "MOVED", "PRECISIONS", "PRESETS",
           "SECTIONS", "AugmentConfig", "Config", "DataConfig", "LossConfig", "ModelConfig", "PatchCoreConfig",
           "RuntimeConfig", "ScoreConfig", "TrainConfig", "apply_mapping", "commented_yaml", "config_from_dict",
           "cpu_preset",
           "default_preset", "get_preset", "gpu_preset", "load_config", "migrate_config", "paper_preset",
           "parse_overrides", "scgan_preset", "set_value", "to_yaml"]
