"""scgan: anomaly detection in images of industrial products, fitted on normal images only.

Two kinds of model: the PatchCore detector, PatchCore's recipe on frozen ImageNet features (kind ``patchcore``, the
default), and SCGAN (Dai et al., IEEE Access 2023), which restores normal semantics (kind ``scgan``).

Public names are imported lazily, so that torch-free parts (ONNX inference) do not import torch.
"""
from __future__ import annotations

from scgan.utils.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "scgan.config",
    "load_config": "scgan.config",
    "MSCAM": "scgan.models.scgan.mscam",
    "ssim": "scgan.models.scgan.losses",
    "Generator": "scgan.models.scgan.networks",
    "Discriminator": "scgan.models.scgan.networks",
    "EfficientNetLite": "scgan.models.patchcore.backbone",
    "seed_everything": "scgan.utils.seed",
    "MVTecAD": "scgan.data.datasets",
    "BTAD": "scgan.data.datasets",
    "FolderDataset": "scgan.data.datasets",
    "AUGMENTATIONS": "scgan.data.augment",
    "make_demo_dataset": "scgan.data.demo",
    "train": "scgan.training.fit",
    "run_test": "scgan.inference.evaluate",
    "run_predict": "scgan.inference.predict",
    "load_model": "scgan.artifacts.model_file",
    "Detector": "scgan.inference.detector",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
