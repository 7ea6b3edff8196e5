"""Data layer: image I/O, the MVTec AD / BTAD / folder datasets, augmentations and the demo dataset."""
from scgan.data.augment import AUGMENTATIONS, Augmentation, build_augmentation, resolve_augmentation
from scgan.data.datasets import (
    BTAD,
    AnomalyDataset,
    FolderDataset,
    MVTecAD,
    Sample,
    build_dataset,
    category_kind,
)
from scgan.data.demo import DEMO_CATEGORIES, make_demo_dataset
from scgan.data.io import ImageReadError, image_to_tensor, load_image, load_mask, tensor_to_image

__all__ = [
    "AUGMENTATIONS",
    "AnomalyDataset",
    "Augmentation",
    "BTAD",
    "DEMO_CATEGORIES",
    "FolderDataset",
    "ImageReadError",
    "MVTecAD",
    "Sample",
    "build_augmentation",
    "build_dataset",
    "category_kind",
    "image_to_tensor",
    "load_image",
    "load_mask",
    "make_demo_dataset",
    "resolve_augmentation",
    "tensor_to_image",
]
