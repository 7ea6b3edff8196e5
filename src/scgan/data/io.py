"""Reading images and masks from disk into uint8 arrays, and converting them to and from tensors.

Every reader returns RGB uint8 whatever the file holds (grayscale, palette, RGBA, 16-bit), resized
to S x S regardless of aspect ratio, and turns any decoding failure into :class:`ImageReadError`
naming the file, so callers handle one exception type.
"""
from __future__ import annotations

import os
import stat
import warnings
from typing import IO, TYPE_CHECKING
from pathlib import Path

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Larger images are refused before decoding (Pillow's own decompression-bomb limit, ~89 Mpx, e.g.
# 9459 x 9459): a corrupt or hostile header must not make us allocate gigabytes.
MAX_IMAGE_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

# Modes holding more than 8 bits per sample, and the value that maps to white.
_WIDE_MODES: dict[str, float] = {
    "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0,
    "I": 65535.0,  # Pillow opens 16-bit PNG/TIFF as "I" (int32 holding 0..65535)
    "F": 255.0,  # float images: Pillow's own convention (convert("L") clips to 0..255)
}


# Modes Image.reduce accepts; others (rare: "P", "1", wide modes) are decoded at full size.
_REDUCIBLE = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr"}


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded; the message names the file."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a non-hidden file name with one of IMAGE_EXTENSIONS (any case)."""
    p = Path(path)
    # Hidden names include macOS "._x.png" resource forks, which carry an image extension but no image.
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by path; [] if it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``, turning every failure (and any oversized header) into ImageReadError."""
    return _open_reduced(path, None)[0]


def _open_reduced(path: Path | IO[bytes], max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Like :func:`_open`, also returning the file's (H, W); ``path`` may be an open binary file (its
    ``name`` attribute, if any, names it in errors).

    ``max_side``: an image whose longer side exceeds it is reduced by an integer factor (JPEG while
    decoding, through ``Image.draft``; other formats by ``Image.reduce`` right after), so that what
    callers keep and convert is bounded by ``max_side``, not by the file.
    """
    hint = "replace or delete the file (training and test data: skip_bad_images=true skips such files)"
    label = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "(uploaded)")
    if isinstance(path, (str, os.PathLike)):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {label}") from None
        except OSError as e:
            raise ImageReadError(f"cannot read image {label}: {e.strerror}; {hint}") from None
        if not stat.S_ISREG(mode):  # opening a FIFO would wait for a writer for ever
            raise ImageReadError(f"{label} is not a regular file (a folder, FIFO, device or socket); "
                                 "give image files only")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; make that an error we can catch.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageReadError(
                        f"image {label} is {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS} allowed "
                        "(a decompression-bomb guard); downscale it before use"
                    )
                if w < 1 or h < 1:
                    raise ImageReadError(f"image {label} has no pixels ({w} x {h}); {hint}")
                factor = 1 if max_side is None else -(-max(w, h) // max_side)  # ceil
                if factor > 1:
                    im.draft(im.mode if im.mode in ("RGB", "L") else None, (-(-w // factor), -(-h // factor)))
                im.load()
                factor = 1 if max_side is None else -(-max(im.size) // max_side)
                if factor == 1:
                    return im.copy(), (h, w)  # the copy outlives the closed file
                if im.mode in ("P", "PA", "1"):
                    im = im.convert("RGBA")
                return (im.reduce(factor) if im.mode in _REDUCIBLE else im.copy()), (h, w)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image {label} is too large to decode safely ({e}); downscale it before use") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {label}") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error ... for bad files
        raise ImageReadError(f"cannot read image {label}: {type(e).__name__}: {e}; {hint}") from None


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 (H, W, 3) RGB; alpha is composited on black, wide modes scaled to 8 bits."""
    if im.mode in _WIDE_MODES:
        a = np.asarray(im).astype(np.float32) * (255.0 / _WIDE_MODES[im.mode])
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:] / 255.0)  # composite on black
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")


def load_image_with_size(
    path: str | os.PathLike[str] | IO[bytes], image_size: int | None, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`load_image`, also returning the file's original (H, W); ``path`` may be an open binary file.

    ``max_side`` (with ``image_size=None``): a larger image comes back reduced by an integer factor so that
    its longer side is at most ``max_side`` (memory bounded by it, not by the file).
    """
    _check_size(image_size)
    im, orig = _open_reduced(Path(path) if isinstance(path, (str, os.PathLike)) else path, max_side)
    rgb = pil_to_rgb(im)
    if image_size is not None and rgb.shape[:2] != (image_size, image_size):
        # Resize after the 8-bit conversion so every mode goes through the same (antialiased) filter.
        rgb = resize_image(rgb, image_size)
    return np.ascontiguousarray(rgb), orig


def resize_image(img: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (S, S, 3), bilinear, as the data sets resize (scoring new files must match)."""
    if img.shape[:2] == (image_size, image_size):
        return img
    return np.array(Image.fromarray(img).resize((image_size, image_size), Image.Resampling.BILINEAR))


def load_image(path: str | os.PathLike[str], image_size: int | None) -> np.ndarray:
    """Read an image file as uint8 RGB (S, S, 3), bilinear-resized to S x S; None keeps the original size."""
    return load_image_with_size(path, image_size)[0]


def load_mask(path: str | os.PathLike[str], image_size: int | None) -> np.ndarray:
    """Read a ground-truth mask as bool (S, S): any non-zero colour channel is anomalous; nearest resize."""
    _check_size(image_size)
    path = Path(path)
    im = _open(path)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette index 0 need not be black: compare colours, not indices
    a = np.asarray(im)
    if a.ndim == 3:  # (H, W, bands): compare the colour bands, never the alpha band
        a = a[:, :, 0] if a.shape[2] == 2 else a[:, :, :3].max(axis=2)
    binary = a > 0
    if image_size is not None and binary.shape != (image_size, image_size):
        small = Image.fromarray(binary.astype(np.uint8) * 255).resize(
            (image_size, image_size), Image.Resampling.NEAREST
        )
        binary = np.asarray(small) > 0
    return np.ascontiguousarray(binary)


def image_to_array(img: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1] (numpy only: ONNX inference needs no torch)."""
    if img.dtype != np.uint8 or img.ndim < 3 or img.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (..., H, W, 3) array, got {img.dtype} {img.shape}")
    return np.moveaxis(img, -1, -3).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 torch tensor (..., 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image_to_array(img)))


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3); values outside [-1, 1] are clipped."""
    if t.dim() < 3 or t.shape[-3] != 3:
        raise ValueError(f"expected a (..., 3, H, W) tensor, got shape {tuple(t.shape)}")
    import torch

    u = ((t.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u.movedim(-3, -1).cpu().numpy()
