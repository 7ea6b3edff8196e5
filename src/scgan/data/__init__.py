"""Data layer: image I/O, the MVTec AD / BTAD / folder datasets, augmentations and the demo dataset.

Names are imported lazily so that reading images (``scgan.data.io``) does not import torch.
"""
from __future__ import annotations

from scgan.utils.lazy import lazy_exports

_EXPORTS = {
    "AUGMENTATIONS": ".augment", "Augmentation": ".augment", "Augmented": ".augment", "Mixture": ".augment",
    "Perlin": ".augment", "SyntheticAnomaly": ".augment", "build_augmentation": ".augment",
    "resolve_augmentation": ".augment",
    "BTAD": ".datasets", "AnomalyDataset": ".datasets", "FolderDataset": ".datasets", "MVTecAD": ".datasets",
    "Sample": ".datasets", "build_dataset": ".datasets", "category_kind": ".datasets",
    "DEMO_CATEGORIES": ".demo", "make_demo_dataset": ".demo",
    "ImageReadError": ".io", "image_to_array": ".io", "image_to_tensor": ".io", "load_image": ".io", "load_mask": ".io",
    "tensor_to_image": ".io",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__
