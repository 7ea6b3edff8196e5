"""Typed configuration: the schema, the presets, overrides (YAML and key=value), migrations of old files.

``runtime`` settings (devices, precision, loader workers) are kept apart from the model's identity.
"""
from scgan.config.migrations import ADDED_LATER, MODEL_FORMAT, MODEL_FORMAT_VERSION, MOVED, migrate_config
from scgan.config.overrides import apply_mapping, load_config, parse_overrides, set_value, to_yaml
from scgan.config.presets import PRESETS, cpu_preset, default_preset, get_preset, gpu_preset, paper_preset
from scgan.config.schema import (IDENTITY_SECTIONS, PRECISIONS, SECTIONS, AugmentConfig, Config, DataConfig,
                                 LossConfig, ModelConfig, RuntimeConfig, ScoreConfig, TrainConfig, validate)

__all__ = ["ADDED_LATER", "IDENTITY_SECTIONS", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "MOVED", "PRECISIONS",
           "PRESETS", "SECTIONS", "AugmentConfig", "Config", "DataConfig", "LossConfig", "ModelConfig",
           "RuntimeConfig", "ScoreConfig", "TrainConfig", "apply_mapping", "cpu_preset", "default_preset", "get_preset", "gpu_preset",
           "load_config", "migrate_config", "paper_preset", "parse_overrides", "set_value", "to_yaml", "validate"]
