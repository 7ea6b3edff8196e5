"""A synthetic MVTec-layout dataset, drawn with NumPy in seconds, for demos and end-to-end tests.

Two categories: ``weave`` (a woven texture) and ``washer`` (a notched metal washer on a dark
background). Normal images vary a little (phase, rotation, position, brightness, pixel noise);
defects are large, high-contrast and come with exact masks: the mask is the set of pixels the
defect changed. Every image is drawn from its own seed (seed, category, split, index), so a
category's images do not depend on which other categories are generated.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

DEMO_TEXTURES: tuple[str, ...] = ("weave",)
DEMO_OBJECTS: tuple[str, ...] = ("washer",)
DEMO_CATEGORIES: tuple[str, ...] = DEMO_TEXTURES + DEMO_OBJECTS
DEMO_DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("scratch", "stain", "hole", "color"),
    "washer": ("scratch", "stain", "missing", "color"),
}
MARKER = ".scgan-demo.json"  # marks a category folder as ours, so a rerun may replace it

_MIN_DEFECT_AREA = 0.01  # resample a defect covering less than this share of the image


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (y, x), each (S, S)."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def _weave(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A woven texture (8 thread periods across) with a jittered phase, angle and brightness."""
    y, x = _grid(size)
    theta = np.deg2rad(rng.uniform(-2.0, 2.0))
    freq = 8.0 * rng.uniform(0.98, 1.02)
    u = (x * np.cos(theta) + y * np.sin(theta)) * freq + rng.uniform(-0.1, 0.1)
    v = (-x * np.sin(theta) + y * np.cos(theta)) * freq + rng.uniform(-0.1, 0.1)
    shade = 1.0 + 0.18 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v) + 0.06 * np.cos(4 * np.pi * u)
    base = np.array([0.72, 0.60, 0.42]) * rng.uniform(0.97, 1.03)
    return shade[:, :, None] * base, np.ones((size, size), dtype=bool)


_WASHER_BACKGROUND = np.array([0.12, 0.12, 0.13])


def _washer(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A flat metal washer with a rim notch, jittered in position, size, notch angle and lighting."""
    y, x = _grid(size)
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, size=2)
    r = np.hypot(y - cy, x - cx)
    ang = np.arctan2(y - cy, x - cx)
    outer, inner = 0.34 * rng.uniform(0.99, 1.01), 0.15 * rng.uniform(0.99, 1.01)
    notch_angle = np.deg2rad(-90.0 + rng.uniform(-8.0, 8.0))
    in_notch = (r > outer - 0.06) & (np.abs(np.mod(ang - notch_angle + np.pi, 2 * np.pi) - np.pi) < 0.12)
    support = (r <= outer) & (r >= inner) & ~in_notch
    light = np.deg2rad(rng.uniform(-10.0, 10.0) - 45.0)
    shade = 0.55 + 0.15 * np.cos(ang - light) + 0.25 * (r - inner) / (outer - inner)
    metal = shade[:, :, None] * np.array([0.95, 0.97, 1.0])
    vignette = 1.0 - 0.3 * np.hypot(y - 0.5, x - 0.5)
    img = np.where(support[:, :, None], metal, _WASHER_BACKGROUND * vignette[:, :, None])
    return img, support


_NORMALS: dict[str, Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "weave": _weave,
    "washer": _washer,
}


def _anchor(support: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random point (y, x) in image units on the object, away from the image border."""
    size = support.shape[0]
    y, x = _grid(size)
    ok = support & (np.abs(y - 0.5) < 0.35) & (np.abs(x - 0.5) < 0.35)
    i = rng.choice(np.flatnonzero(ok))
    return float(y.flat[i]), float(x.flat[i])


def _blob(support: np.ndarray, rng: np.random.Generator, r0: float) -> np.ndarray:
    """A wobbly disc of mean radius r0 (image units) centred on the object, as a bool (S, S) mask."""
    y, x = _grid(support.shape[0])
    cy, cx = _anchor(support, rng)
    ang = np.arctan2(y - cy, x - cx)
    k = rng.integers(2, 5)
    radius = r0 * (1 + 0.25 * np.sin(k * ang + rng.uniform(0, 2 * np.pi)) + 0.1 * np.sin(5 * ang + rng.uniform(0, 6)))
    return np.hypot(y - cy, x - cx) < radius


def _scratch(support: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A straight thick line segment through a point of the object, 30-45% of the image long, 4% wide."""
    size = support.shape[0]
    y, x = _grid(size)
    length, angle = rng.uniform(0.3, 0.45), rng.uniform(0, 2 * np.pi)
    p0 = np.array(_anchor(support, rng)) - 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    d = np.array([np.sin(angle), np.cos(angle)])
    rel_y, rel_x = y - p0[0], x - p0[1]
    t = np.clip(rel_y * d[0] + rel_x * d[1], 0.0, length)
    dist = np.hypot(rel_y - t * d[0], rel_x - t * d[1])
    return dist < max(1.5 / size, 0.02)


def _missing(size: int, rng: np.random.Generator) -> np.ndarray:
    """A 35-50 degree wedge from the image centre (removes a piece of the washer)."""
    y, x = _grid(size)
    start, width = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(35, 50))
    ang = np.arctan2(y - 0.5, x - 0.5)
    return np.mod(ang - start, 2 * np.pi) < width


def _apply_defect(
    category: str, defect: str, img: np.ndarray, support: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``defect`` on ``img``; return the new image and the exact mask of changed pixels."""
    size = img.shape[0]
    for _ in range(100):
        if defect == "scratch":
            region = _scratch(support, rng)
        elif defect in ("stain", "hole"):
            region = _blob(support, rng, rng.uniform(0.07, 0.1))
        elif defect == "color":
            region = _blob(support, rng, rng.uniform(0.1, 0.13))
        elif defect == "missing":
            region = _missing(size, rng)
        else:
            valid = ", ".join(DEMO_DEFECTS[category])
            raise ValueError(f"unknown demo defect {defect!r} for {category}; valid: {valid}")
        mask = region & support
        if mask.mean() >= _MIN_DEFECT_AREA:
            break
    out = img.copy()
    m = mask[:, :, None]
    if defect == "scratch":
        colour = np.array([0.1, 0.07, 0.05]) if category == "weave" else np.array([0.2, 0.17, 0.15])
        out = np.where(m, colour, out)
    elif defect == "stain":
        colour = np.array([0.2, 0.1, 0.03]) if category == "weave" else np.array([0.45, 0.25, 0.08])
        out = np.where(m, 0.15 * img + 0.85 * colour, out)
    elif defect == "hole":
        out = np.where(m, np.array([0.02, 0.02, 0.02]), out)
    elif defect == "missing":
        out = np.where(m, _WASHER_BACKGROUND, out)
    else:  # colour: a strong hue shift that keeps the local structure
        tint = np.array([0.45, 0.85, 1.7]) if category == "weave" else np.array([1.5, 0.7, 0.3])
        out = np.where(m, np.clip(img * tint, 0, 1), out)
    return out, mask


def _render(category: str, defect: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 (S, S, 3) image and its bool (S, S) mask (all False for "good")."""
    img, support = _NORMALS[category](size, rng)
    mask = np.zeros((size, size), dtype=bool)
    if defect != "good":
        img, mask = _apply_defect(category, defect, img, support, rng)
    img = img + rng.normal(0.0, 0.015, size=img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), mask


def _check_category(category: str) -> None:
    if category not in DEMO_CATEGORIES:
        raise ValueError(f"unknown demo category {category!r}; valid demo categories: {', '.join(DEMO_CATEGORIES)}")


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(category.encode()), zlib.crc32(split.encode()), index])


def render_demo_image(
    category: str, defect: str = "good", image_size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One demo image, uint8 (S, S, 3), and its exact bool (S, S) defect mask."""
    _check_category(category)
    if defect != "good" and defect not in DEMO_DEFECTS[category]:
        raise ValueError(f"unknown defect {defect!r} for {category}; valid: good, {', '.join(DEMO_DEFECTS[category])}")
    return _render(category, defect, image_size, _rng(seed, category, "single:" + defect, 0))


def _test_plan(category: str, n_test: int) -> list[str]:
    """Defect name of each test image: about half good, the rest spread evenly over the defect kinds."""
    kinds = DEMO_DEFECTS[category]
    n_bad = n_test // 2
    plan = ["good"] * (n_test - n_bad)
    for k, kind in enumerate(kinds):
        plan += [kind] * (n_bad // len(kinds) + (1 if k < n_bad % len(kinds) else 0))
    return plan


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_category(folder: Path, category: str, n_train: int, n_test: int, size: int, seed: int) -> None:
    width = max(3, len(str(max(n_train, n_test))))
    for i in range(n_train):
        img, _ = _render(category, "good", size, _rng(seed, category, "train", i))
        _save_png(folder / "train" / "good" / f"{i:0{width}d}.png", img)
    counters: dict[str, int] = {}
    for i, defect in enumerate(_test_plan(category, n_test)):
        j = counters[defect] = counters.get(defect, -1) + 1
        img, mask = _render(category, defect, size, _rng(seed, category, "test", i))
        _save_png(folder / "test" / defect / f"{j:0{width}d}.png", img)
        if defect != "good":
            _save_png(folder / "ground_truth" / defect / f"{j:0{width}d}_mask.png", mask.astype(np.uint8) * 255)
    meta = {"category": category, "n_train": n_train, "n_test": n_test, "image_size": size, "seed": seed}
    (folder / MARKER).write_text(json.dumps(meta, indent=1))


def make_demo_dataset(
    path: str | os.PathLike[str],
    n_train: int = 100,
    n_test: int = 40,
    image_size: int = 128,
    seed: int = 0,
    categories: Sequence[str] | None = None,
) -> Path:
    """Write an MVTec-layout demo dataset under ``path`` (one folder per category) and return ``path``.

    A category folder left by an earlier call is replaced; any other existing, non-empty folder of
    that name is left alone and raises FileExistsError.
    """
    cats = tuple(categories) if categories is not None else DEMO_CATEGORIES
    for c in cats:
        _check_category(c)
    if n_train < 2 or n_test < 0:
        raise ValueError(f"need n_train >= 2 (one is held out for validation) and n_test >= 0, got {n_train}, {n_test}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for c in cats:
        target = root / c
        if target.exists() and any(target.iterdir()) and not (target / MARKER).is_file():
            raise FileExistsError(
                f"{target} exists and was not made by make_demo_dataset; choose another path or remove it"
            )
    for c in cats:
        target = root / c
        # Build beside the target, then swap: an interrupted run never leaves a half-written category.
        tmp = Path(tempfile.mkdtemp(prefix=f".{c}.", dir=root))
        try:
            _write_category(tmp, c, n_train, n_test, image_size, seed)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root
