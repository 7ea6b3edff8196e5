"""SCGAN: unsupervised anomaly detection by restoring normal semantics (Dai et al., IEEE Access 2023).

Public names are imported lazily, so that torch-free parts (ONNX inference) do not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "scgan.config",
    "load_config": "scgan.config",
    "MSCAM": "scgan.model.layers.mscam",
    "ssim": "scgan.model.losses",
    "Generator": "scgan.model.networks",
    "Discriminator": "scgan.model.networks",
    "seed_everything": "scgan.seed",
    "MVTecAD": "scgan.data.datasets",
    "BTAD": "scgan.data.datasets",
    "FolderDataset": "scgan.data.datasets",
    "AUGMENTATIONS": "scgan.data.augment",
    "make_demo_dataset": "scgan.data.demo",
    "train": "scgan.training.fit",
    "run_test": "scgan.evaluate",
    "run_predict": "scgan.predict",
    "load_model": "scgan.checkpoint",
    "Detector": "scgan.detector",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
