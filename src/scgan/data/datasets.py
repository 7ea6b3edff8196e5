"""MVTec AD, BTAD and plain-folder datasets, decoded once and cached in memory (SPEC section 7).

Every dataset lists its files, picks the requested split (a seeded train/validation split of the
normal training images, or the test set), then decodes and resizes every image and mask at
construction: bad files surface immediately, and no epoch ever decodes again.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from scgan.config import DataConfig
from scgan.data.demo import DEMO_CATEGORIES, DEMO_TEXTURES
from scgan.data.io import (
    ImageReadError,
    InputSpec,
    image_to_tensor,
    images_under,
    is_hidden,
    list_images,
    load_image_with_size,
    load_mask,
    open_image,
    resize_mask,
    to_channels,
)

MVTEC_TEXTURES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS: tuple[str, ...] = (
    "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
)
MVTEC_CATEGORIES: tuple[str, ...] = MVTEC_TEXTURES + MVTEC_OBJECTS
BTAD_PRODUCTS: tuple[str, ...] = ("01", "02", "03")

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Test sub-folders with these names (any case) hold normal images; every other name is a defect type.
NORMAL_NAMES: tuple[str, ...] = ("good", "ok", "normal")
# The fewest validation images a small training set gives up (see validation_size).
MIN_VAL_IMAGES = 5
# A calibration fitted on fewer normal validation images than this is rough; training and test warn.
MIN_CALIBRATION_IMAGES = 20
# The validation split holds at most this many images, the rest train: the calibration decodes and holds them (about
# 0.6 GB at 320 px), and a 0.99 quantile of 2,000 normal scores is resolved (about 20 lie above it).
MAX_VAL_IMAGES = 2000

PathLike = str | os.PathLike[str]


def category_kind(name: str) -> str:
    """"texture" for the paper's five MVTec texture classes and the demo textures, else "object".

    BTAD products count as objects: the paper names only carpet, grid, leather, tile and wood as
    textures (those get colour-jittered CopyPaste); choose ``augment.name`` explicitly to differ.
    """
    return "texture" if str(name).lower() in MVTEC_TEXTURES + DEMO_TEXTURES else "object"


@dataclass(frozen=True)
class Sample:
    """One file of a split: label 0 normal / 1 anomalous, its mask (None if absent) and defect type."""

    path: Path
    label: int
    mask_path: Path | None
    defect: str  # "good" for normal images


def validation_size(n: int, val_fraction: float) -> int:
    """Validation images held out of ``n`` normal ones: round(val_fraction * n), but at least
    MIN_VAL_IMAGES where a third of the images allows it (and always at least 1), and at most MAX_VAL_IMAGES.

    One validation image (10% of fewer than 15) makes the calibration's min-max range zero, and
    normalised scores then reach +-1e9; a few more keep it usable on small sets. Beyond MAX_VAL_IMAGES a larger
    split adds memory, not resolution.
    """
    return min(max(1, round(val_fraction * n), min(MIN_VAL_IMAGES, n // 3)), n - 1, MAX_VAL_IMAGES)


def calibration_warning(n_val: int, minimum: int = 1) -> str | None:
    """The one rule on how many normal images a calibration may rest on: fewer than ``minimum`` raise ValueError,
    fewer than MIN_CALIBRATION_IMAGES give the warning returned, more give None.

    ``minimum``: training holds out what :func:`validation_size` allows (at least one image: a small set still
    trains, with the warning). ``scgan calibrate``, whose images are all calibration images, asks for
    MIN_VAL_IMAGES, what training holds out of any set of 15 or more: on fewer, the min-max range of a score is
    (nearly) zero, and normal images get normalised scores of 1e5 and more and are called anomalous.
    """
    if n_val < minimum:
        raise ValueError(f"a calibration needs at least {minimum} normal images, found {n_val}: on fewer, the range "
                         "of the scores is (nearly) zero, so normal images get normalised scores far above 1 and are "
                         f"called anomalous; add normal images ({MIN_CALIBRATION_IMAGES} or more for a sound "
                         "threshold)")
    if n_val >= MIN_CALIBRATION_IMAGES:
        return None
    return (f"the calibration rests on {n_val} normal validation image(s), fewer than {MIN_CALIBRATION_IMAGES}: "
            "thresholds and normalised scores are rough; add normal images")


def split_train_val(paths: list[Path], val_fraction: float, split_seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded disjoint (train, val) split of ``paths``; val gets :func:`validation_size` images.

    Uses its own generator, so the split depends only on the file list and ``split_seed``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(paths)
    if n < 2:
        raise ValueError(f"need at least 2 normal training images to hold out a validation image, found {n}")
    n_val = validation_size(n, val_fraction)
    order = np.random.default_rng(split_seed).permutation(n)
    ordered = sorted(paths)
    val = sorted(ordered[i] for i in order[:n_val])
    train = sorted(ordered[i] for i in order[n_val:])
    return train, val


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _normal_samples(train_dir: Path, split: str, val_fraction: float, split_seed: int) -> list[Sample]:
    """The train or val part of the normal images in ``train_dir``."""
    paths = list_images(train_dir)
    if not paths:
        raise ValueError(
            f"no training images in {train_dir}: put the normal images there as .png, .jpg, .bmp or .tif files"
        )
    train, val = split_train_val(paths, val_fraction, split_seed)
    return [Sample(p, 0, None, "good") for p in (train if split == "train" else val)]


def _index_masks(folder: Path) -> dict[str, Path]:
    """Map image stem -> mask file for ``<stem>_mask.<ext>`` or ``<stem>.<ext>``; ``_mask`` names win."""
    index: dict[str, Path] = {}
    masks = list_images(folder)
    for p in masks:
        if not p.stem.endswith("_mask"):
            index.setdefault(p.stem, p)
    for p in masks:
        if p.stem.endswith("_mask"):
            index[p.stem[: -len("_mask")]] = p
    return index


def _test_samples(test_dir: Path, mask_root: Path, require_masks: bool) -> list[Sample]:
    """Every image of ``test_dir/<name>/``: normal names get label 0, others label 1 and a mask lookup."""
    if not test_dir.is_dir():
        raise FileNotFoundError(f"no test folder {test_dir}: expected {test_dir}/<defect>/ folders of test images")
    samples: list[Sample] = []
    missing: list[Path] = []
    for sub in sorted(d for d in test_dir.iterdir() if d.is_dir() and not is_hidden(d.name)):
        if sub.name.lower() in NORMAL_NAMES:
            samples += [Sample(p, 0, None, "good") for p in list_images(sub)]
            continue
        masks = _index_masks(mask_root / sub.name)
        for p in list_images(sub):
            samples.append(Sample(p, 1, masks.get(p.stem), sub.name))
            if p.stem not in masks:
                missing.append(p)
    if not samples:
        raise ValueError(f"no test images in {test_dir}: expected {test_dir}/<defect>/ folders of images")
    if missing and require_masks:
        first = missing[0]
        raise ValueError(
            f"anomalous test image {first} has no ground-truth mask (looked for "
            f"{mask_root / first.parent.name / (first.stem + '_mask')}.png or {first.stem}.<ext>)"
            + (f"; {len(missing) - 1} more images lack masks" if len(missing) > 1 else "")
            + "; add the masks, or evaluate at image level only: scgan test --image-level-only "
            "(scgan train: data.require_masks=false; Python: require_masks=False)"
        )
    return sorted(samples, key=lambda s: s.path)


def _category_dir(root: PathLike, category: str, known: tuple[str, ...], normal: str, name: str) -> Path:
    """``root/category`` after checking it holds ``train/<normal>``; clear errors otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{name} root folder not found: {root}; pass the folder that holds the category folders"
        )
    present = sorted(d.name for d in root.iterdir() if (d / "train" / normal).is_dir())
    cat_dir = root / category
    if category and (cat_dir / "train" / normal).is_dir():
        return cat_dir
    if category and cat_dir.is_dir():
        raise FileNotFoundError(
            f"{cat_dir} has no train/{normal} folder; expected the {name} layout (see docs/data.md)"
        )
    hint = ""
    if (root / "train" / normal).is_dir():
        hint = f" ({root} itself looks like a category folder: pass its parent as root and {root.name!r} as category)"
    if category in known:
        raise FileNotFoundError(
            f"category folder {cat_dir} not found; categories present under {root}: {', '.join(present) or 'none'}"
            + hint
        )
    valid = sorted(set(known) | set(present))
    if not category:
        raise ValueError(f"no {name} category given (--category); valid categories: {', '.join(valid)}{hint}")
    raise ValueError(f"unknown {name} category {category!r}; valid categories: {', '.join(valid)}{hint}")


class AnomalyDataset(Dataset):
    """One split of one category, with every image (and mask) decoded, brought to the model's input and cached.

    ``spec`` is the model's :class:`InputSpec` (an int S: RGB S x S). Items are dicts: ``image`` float32
    (C, H, W) in [-1, 1], ``label`` int64 scalar (1 = anomalous), ``mask`` float32 (1, H, W) of 0/1 (zeros for
    normal images or absent masks), ``path`` str, ``defect`` str ("good" when normal), ``orig_size`` int64 (2,)
    = the file's (H, W), and ``index``. The caches are public: ``images`` uint8 (H, W, C) per item (an (N, H, W, C)
    array when every image has one shape), ``masks`` bool (H, W) per item, ``orig_sizes`` (N, 2). Images of
    different shapes (the aspect kept) go into batches with :func:`shape_batches`.
    """

    def __init__(
        self,
        samples: list[Sample],
        category: str,
        split: str,
        spec: InputSpec | int = 256,
        skip_bad_images: bool = False,
    ) -> None:
        _check_split(split)
        self.spec = InputSpec.of(spec)
        self.category = category
        self.kind = category_kind(category)
        self.split = split
        self.skipped: list[Path] = []
        self.samples, self.images, self.masks, self.orig_sizes = self._decode(samples, skip_bad_images)
        # Pixel-level evaluation needs a mask for every anomalous image (vacuously true without any).
        self.has_masks = all(s.mask_path is not None for s in self.samples if s.label == 1)

    @property
    def image_size(self) -> int:
        """The spec's size: S, or the short side where the aspect is kept."""
        return self.spec.size

    def _decode(self, samples: list[Sample], skip_bad_images: bool) -> tuple[list[Sample], Any, Any, np.ndarray]:
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        kept: list[Sample] = []
        reasons: list[str] = []
        for sample in samples:
            current = sample.path
            try:
                img, size = load_image_with_size(sample.path, self.spec)
                mask = np.zeros(img.shape[:2], dtype=bool)
                if sample.label == 1 and sample.mask_path is not None:
                    current = sample.mask_path
                    mask = load_mask(sample.mask_path, img.shape[:2])
            except ImageReadError as e:
                if not skip_bad_images:
                    raise
                self.skipped.append(current)
                reasons.append(str(e))
                continue
            images.append(img)
            masks.append(mask)
            sizes.append(size)
            kept.append(sample)
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable file(s) in {self.category or 'dataset'} {self.split}; "
                f"first: {reasons[0]}",
                UserWarning,
                stacklevel=4,
            )
        if not kept:
            where = samples[0].path.parent if samples else "the dataset"
            raise ValueError(f"no readable images left in the {self.split} split (under {where})")
        if len({im.shape for im in images}) == 1:  # one shape (always so for a square spec): one array
            return kept, np.stack(images), np.stack(masks), np.array(sizes, dtype=np.int64)
        return kept, images, masks, np.array(sizes, dtype=np.int64)

    def convert(self, channels: int) -> None:
        """Bring the cached images to ``channels`` (1: grey, 3: RGB) in place (see ``io.to_channels``)."""
        self.spec = dataclasses.replace(self.spec, channels=channels)
        converted = [to_channels(im, channels) for im in self.images]
        self.images = np.stack(converted) if isinstance(self.images, np.ndarray) else converted

    def shape(self, index: int) -> tuple[int, int]:
        """The (H, W) of item ``index`` as the model sees it."""
        return tuple(self.images[index].shape[:2])

    def stored_masks(self) -> np.ndarray:
        """Ground-truth masks at their stored resolution, bool (N, H, W) (zeros for normal images).

        Pixel metrics are computed at this resolution (published ones are), not at the model's. Masks of another
        size than the most common one are resized to it (nearest neighbour).
        """
        loaded = {i: load_mask(s.mask_path, None) for i, s in enumerate(self.samples)
                  if s.label == 1 and s.mask_path is not None}
        shapes = [m.shape for m in loaded.values()]
        h, w = max(set(shapes), key=shapes.count) if shapes else self.shape(0)
        out = np.zeros((len(self.samples), h, w), dtype=bool)
        for i, m in loaded.items():
            out[i] = resize_mask(m, (h, w))
        return out

    @property
    def labels(self) -> np.ndarray:
        """int64 (N,) labels, 1 = anomalous."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        return {
            "image": image_to_tensor(self.images[index]),  # (C, H, W)
            "label": torch.tensor(sample.label, dtype=torch.int64),
            "mask": torch.from_numpy(np.ascontiguousarray(self.masks[index])).to(torch.float32).unsqueeze(0),
            "path": str(sample.path),
            "defect": sample.defect,
            "orig_size": torch.from_numpy(self.orig_sizes[index].copy()),  # (2,) = (H, W)
            "index": index,
        }

    def __repr__(self) -> str:
        n_anom = int(self.labels.sum())
        return (
            f"{type(self).__name__}(category={self.category!r}, split={self.split!r}, n={len(self)}, "
            f"anomalous={n_anom}, spec={self.spec}, skipped={len(self.skipped)})"
        )


def shape_batches(dataset: AnomalyDataset, batch_size: int) -> list[list[int]]:
    """Indices in batches of at most ``batch_size`` whose images share one shape, in dataset order within a
    shape (a DataLoader's ``batch_sampler``: images whose aspect was kept cannot be stacked otherwise)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i in range(len(dataset)):
        by_shape.setdefault(dataset.shape(i), []).append(i)
    return [idx[k:k + batch_size] for idx in by_shape.values() for k in range(0, len(idx), batch_size)]


def eval_loader(dataset: AnomalyDataset, batch_size: int, num_workers: int = 0):
    """A DataLoader over ``dataset`` for scoring: batches of one shape, every item once (order: see
    :func:`shape_batches`; results carry each item's ``index``)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=shape_batches(dataset, batch_size), num_workers=num_workers)


def _category_samples(cat_dir: Path, normal: str, split: str, val_fraction: float, split_seed: int,
                      require_masks: bool) -> list[Sample]:
    """Samples of one split of an MVTec-like category: train/<normal> (split into train/val), or test."""
    if split == "test":
        return _test_samples(cat_dir / "test", cat_dir / "ground_truth", require_masks)
    return _normal_samples(cat_dir / "train" / normal, split, val_fraction, split_seed)


class _CategoryDataset(AnomalyDataset):
    """A dataset read from a root folder: ``MVTecAD(root, category)``, ``BTAD(root, "01")``, ``FolderDataset(root)``.

    The default (:meth:`find_samples`) reads category folders with ``train/<normal>``, ``test/<defect>`` and
    ``ground_truth/<defect>``; subclasses name the known categories, the normal folder's name and the dataset
    (for messages), and may normalise how a category is written (:meth:`category_name`).
    """

    KNOWN: tuple[str, ...] = ()
    NORMAL = "good"
    LABEL = ""

    def __init__(
        self,
        root: PathLike,
        category: str = "",
        split: str = "train",
        spec: InputSpec | int = 256,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        skip_bad_images: bool = False,
        require_masks: bool = True,
    ) -> None:
        _check_split(split)
        samples, category = self.find_samples(Path(root), self.category_name(category), split, val_fraction,
                                              split_seed, require_masks)
        super().__init__(samples, category, split, spec, skip_bad_images)

    @classmethod
    def list_samples(cls, root: PathLike, category: str = "", split: str = "train", val_fraction: float = 0.1,
                     split_seed: int = 0, require_masks: bool = True) -> tuple[list[Sample], str]:
        """The split's samples and the category's name, as the constructor finds them, with nothing decoded."""
        _check_split(split)
        finder = cls.__new__(cls)  # find_samples reads only the class's names, not a decoded dataset
        return finder.find_samples(Path(root), cls.category_name(category), split, val_fraction, split_seed,
                                   require_masks)

    @staticmethod
    def category_name(category: str | int) -> str:
        return str(category)

    def find_samples(self, root: Path, category: str, split: str, val_fraction: float, split_seed: int,
                     require_masks: bool) -> tuple[list[Sample], str]:
        """The split's samples and the category's name."""
        cat_dir = _category_dir(root, category, self.KNOWN, self.NORMAL, self.LABEL)
        return _category_samples(cat_dir, self.NORMAL, split, val_fraction, split_seed, require_masks), category


class MVTecAD(_CategoryDataset):
    """MVTec AD: ``root/CATEGORY/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``."""

    KNOWN = MVTEC_CATEGORIES + DEMO_CATEGORIES
    NORMAL = "good"
    LABEL = "MVTec AD"


def _btad_name(category: str | int) -> str:
    """BTAD products are two-digit folders: 1 / "1" -> "01"."""
    category = str(category)
    return category.zfill(2) if category.isdigit() and len(category) < 2 else category


class BTAD(_CategoryDataset):
    """BTAD: ``root/NN/{train/ok, test/ok, test/ko, ground_truth/ko/<stem>[_mask].png|.bmp}``."""

    KNOWN = BTAD_PRODUCTS
    NORMAL = "ok"
    LABEL = "BTAD"
    category_name = staticmethod(_btad_name)


def _folder_train_dir(root: Path) -> Path:
    """``root/train/{good,ok,normal}`` if present, else ``root/train``, else ``root`` itself (a flat folder)."""
    train = root / "train"
    if not train.is_dir():
        return root
    for name in NORMAL_NAMES:
        if (train / name).is_dir():
            return train / name
    return train


class FolderDataset(_CategoryDataset):
    """A generic folder: ``root/train/`` (or a flat ``root``) of normal images, optional ``root/test/<name>/``.

    Test folders named good / ok / normal hold normal images, any other name is a defect type; masks
    are ``root/masks/<name>/<stem>[_mask].<ext>`` (``root/ground_truth`` also works). ``category``
    only names the data (it defaults to the folder's name) and picks texture/object by name.
    """

    @staticmethod
    def category_name(category: str | int) -> str:
        if category in SPLITS:  # FolderDataset(root, "test") from before the split moved behind the category
            raise ValueError(f"FolderDataset's second argument is the category (a name), not the split: "
                             f"pass split={category!r}")
        return str(category)

    def find_samples(self, root: Path, category: str, split: str, val_fraction: float, split_seed: int,
                     require_masks: bool) -> tuple[list[Sample], str]:
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if split == "test":
            mask_root = next((root / n for n in ("masks", "ground_truth") if (root / n).is_dir()), root / "masks")
            samples = _test_samples(root / "test", mask_root, require_masks)
        else:
            samples = _normal_samples(_folder_train_dir(root), split, val_fraction, split_seed)
        return samples, category or root.resolve().name


def normal_images(folder: PathLike, spec: InputSpec | int, skip_bad_images: bool = False) -> AnomalyDataset:
    """Every image under ``folder`` (recursively) as a normal validation set: what ``scgan calibrate`` fits on."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder of normal images not found: {folder}")
    files = images_under(folder)
    if not files:
        raise ValueError(f"no images found under {folder}")
    return AnomalyDataset([Sample(p, 0, None, "good") for p in files], folder.resolve().name, "val", spec,
                          skip_bad_images)


DATASETS: dict[str, type[AnomalyDataset]] = {"mvtec": MVTecAD, "btad": BTAD, "folder": FolderDataset}


class ImageStream:
    """One split's images decoded one at a time, never all held: what fitting on more images than memory holds
    iterates (``AnomalyDataset`` decodes and caches every image at construction). ``read(i)`` is item ``i``'s
    uint8 (H, W, C) at the spec, or None where it cannot be read and ``skip_bad_images`` is set (its path then joins
    ``skipped``); without it an unreadable file raises :class:`ImageReadError`."""

    def __init__(self, samples: list[Sample], category: str, split: str, spec: InputSpec | int,
                 skip_bad_images: bool = False) -> None:
        if not samples:
            raise ValueError(f"no images in the {split} split")
        self.samples = samples
        self.category = category
        self.kind = category_kind(category)
        self.split = split
        self.spec = InputSpec.of(spec)
        self.skip_bad_images = skip_bad_images
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> np.ndarray | None:
        try:
            return load_image_with_size(self.samples[index].path, self.spec)[0]
        except ImageReadError:
            if not self.skip_bad_images:
                raise
            self.skipped.append(self.samples[index].path)
            return None

    def shape(self, index: int) -> tuple[int, int]:
        """The (H, W) :meth:`read` gives item ``index`` at, from its file's header alone (nothing decoded); OSError
        where the file cannot be opened (UnidentifiedImageError where it is no image)."""
        with open_image(self.samples[index].path) as im:
            w, h = im.size
        return self.spec.shape(h, w)


def stream_for(data: DataConfig, split: str, spec: InputSpec | int) -> ImageStream:
    """The ``split`` of the data a config's ``data`` section names, as an :class:`ImageStream`."""
    check_dataset_name(data.dataset)
    samples, category = DATASETS[data.dataset].list_samples(data.root, data.category, split, data.val_fraction,
                                                            data.split_seed, data.require_masks)
    return ImageStream(samples, category, split, spec, data.skip_bad_images)


def check_dataset_name(dataset: str) -> None:
    """ValueError naming the valid datasets unless ``dataset`` is one."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")


def dataset_for(data: DataConfig, split: str, spec: InputSpec | int) -> AnomalyDataset:
    """The ``split`` of the data a config's ``data`` section names, brought to ``spec``."""
    return build_dataset(data.dataset, data.root, data.category, split=split, spec=spec, val_fraction=data.val_fraction,
                         split_seed=data.split_seed, skip_bad_images=data.skip_bad_images,
                         require_masks=data.require_masks)


def build_dataset(
    dataset: str, root: PathLike, category: str, split: str = "train", spec: InputSpec | int = 256, **kwargs: Any
) -> AnomalyDataset:
    """The named dataset ("mvtec", "btad" or "folder"); ``kwargs`` go to its constructor."""
    check_dataset_name(dataset)
    return DATASETS[dataset](root, category, split=split, spec=spec, **kwargs)
