"""Reading images and masks from disk into uint8 arrays, bringing them to a model's input, and converting
them to and from tensors.

Every reader decodes to RGB uint8 whatever the file holds (grayscale, palette, RGBA, 16-bit), then brings
the image to a model's :class:`InputSpec` (S x S regardless of aspect ratio for the SCGAN; the aspect kept
for the PatchCore detector; 1 or 3 channels), and turns any decoding failure into :class:`ImageReadError`
naming the file, so callers handle one exception type.
"""
from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from scgan.utils.names import printable

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


# The only formats decoded, from files, bytes and uploads alike: raster formats Pillow decodes in-process. Any other
# format Pillow knows is refused unread: EPS and PostScript would run the Ghostscript found on PATH on the file's
# program; PDF, ICO, PSD, FITS ... are documents or containers no data set or camera gives.
DECODED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
# The formats images opened that way report: JPEG's opener gives a camera's multi-picture JPEG as "MPO".
OPENED_FORMATS: tuple[str, ...] = (*DECODED_FORMATS, "MPO")
FORMAT_NAMES = "PNG, JPEG, BMP, TIFF or WebP"

# Modes Image.reduce accepts; the others are converted first, keeping their values (16-bit stays 16-bit in "I").
_REDUCIBLE = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"}
_REDUCED_AS = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


class ImageReadError(ValueError):
    """An image or mask file that cannot be decoded; the message names the file."""


def is_hidden(relative: str | os.PathLike[str]) -> bool:
    """True where a part of ``relative`` (a name, or a path below a folder searched) starts with a dot: hidden files
    and folders (".thumbs/", ".git/", macOS "._x.png" resource forks, which carry an image extension but no image)
    are never taken for images."""
    return any(part.startswith(".") for part in Path(relative).parts)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True for a non-hidden file name with one of IMAGE_EXTENSIONS (any case)."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(p.name)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by path; [] if it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def images_under(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``folder``, recursively, folder by folder in sorted order (a folder's own files before
    its subfolders'); hidden files and folders, at any depth, left out, and so are linked folders below it (a link
    may lead outside it or back into it, as ``scgan watch`` never follows one either; linked files are read)."""
    folder = Path(folder)
    folders = [folder, *sorted(d for d in folder.rglob("*") if d.is_dir() and not d.is_symlink()
                               and not is_hidden(d.relative_to(folder)))]
    return [p for d in folders for p in list_images(d)]


@dataclass
class InputFile:
    """A file named on the command line or found in a folder named there, and its path relative to that folder (the
    name its outputs keep)."""

    path: Path
    relative: Path


def expand_inputs(inputs: Iterable[str | os.PathLike[str]], *, allow_empty: bool = False) -> list[InputFile]:
    """Files as given; folders searched recursively for image files (:func:`images_under`).

    A named file is taken whatever it is (a FIFO, a broken link or a non-image is refused when read, per file). A path
    that does not exist raises FileNotFoundError: it is a mistyped argument, not a bad file. No file at all raises
    ValueError, unless ``allow_empty`` (the caller has images from elsewhere too).
    """
    out: list[InputFile] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += [InputFile(q, q.relative_to(p)) for q in images_under(p)]
        elif p.exists() or p.is_symlink():
            out.append(InputFile(p, Path(p.name)))
        else:
            raise FileNotFoundError(f"input not found: {printable(p)}")
    if not out and not allow_empty:
        raise ValueError("no images to score: the inputs hold no image files")
    return out


def open_image(fp: str | os.PathLike[str] | IO[bytes]) -> Image.Image:
    """``Image.open`` of one of DECODED_FORMATS (lazy: only the header is read); UnidentifiedImageError for any other
    format, which is never parsed further."""
    return Image.open(fp, formats=DECODED_FORMATS)


def reduce_image(im: Image.Image, max_side: int | None) -> Image.Image:
    """``im`` reduced by the smallest integer factor that brings its longer side to ``max_side`` or less (a box
    filter), whatever its mode; ``im`` itself where it is small enough or ``max_side`` is None.

    Modes Image.reduce refuses (palette, 1-bit, 16-bit) are converted first without losing values, so that every
    mode is bounded alike."""
    factor = 1 if max_side is None else -(-max(im.size) // max_side)  # ceil
    if factor <= 1:
        return im
    if im.mode not in _REDUCIBLE:
        im = im.convert(_REDUCED_AS.get(im.mode, "RGB"))
    return im.reduce(factor)


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
    hint = "replace or delete the file (train, test and calibrate: skip_bad_images=true skips such files)"
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
            with open_image(path) as im:
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
                small = reduce_image(im, max_side)
                return (im.copy() if small is im else small), (h, w)  # the copy outlives the closed file
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read image {label}: it is not a {FORMAT_NAMES} image (the formats scgan "
                             f"decodes); {hint}") from None
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


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its images: the size rule and the channels.

    ``keep_aspect=False``: every image is resized to ``size`` x ``size`` (the SCGAN's S, aspect ignored).
    ``keep_aspect=True``: the shorter side becomes ``size`` and the other keeps the aspect ratio (up to
    ``MAX_ASPECT`` times ``size``: a sliver of an image is not blown up without bound), each side rounded to a
    multiple of ``multiple`` (a fully convolutional model's stride) and at least ``min_side`` (and two multiples).
    ``channels`` is 3 (RGB) or 1 (grey: the luma of RGB, exactly the value of a grey file).
    """

    MAX_ASPECT = 4

    size: int
    keep_aspect: bool = False
    multiple: int = 1
    channels: int = 3
    min_side: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.size, (int, np.integer)) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"image size must be a positive integer, got {self.size!r}")
        if self.multiple < 1 or self.channels not in (1, 3):
            raise ValueError(f"an input needs multiple >= 1 and 1 or 3 channels, got {self.multiple}, {self.channels}")

    @classmethod
    def of(cls, spec: InputSpec | int) -> InputSpec:
        """``spec`` itself, or the square spec of side ``spec``."""
        return spec if isinstance(spec, InputSpec) else cls(int(spec))

    @property
    def least_side(self) -> int:
        """The shortest side an image of a model that keeps the aspect is brought to: two multiples, and min_side."""
        m = self.multiple
        return max(2 * m, -(-self.min_side // m) * m)

    def shape(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) an (h, w) image is resized to."""
        if not self.keep_aspect:
            return self.size, self.size
        scale = min(self.size / min(h, w), self.MAX_ASPECT * self.size / max(h, w))
        m, least = self.multiple, self.least_side
        return max(least, round(h * scale / m) * m), max(least, round(w * scale / m) * m)

    def to_dict(self) -> dict[str, int | bool]:
        d = {"size": int(self.size), "keep_aspect": bool(self.keep_aspect), "multiple": int(self.multiple),
             "channels": int(self.channels)}
        return {**d, "min_side": int(self.min_side)} if self.min_side else d  # older readers know the rest

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(int(d["size"]), bool(d.get("keep_aspect", False)), int(d.get("multiple", 1)),
                   int(d.get("channels", 3)), int(d.get("min_side", 0)))


def load_image_with_size(
    path: str | os.PathLike[str] | IO[bytes], spec: InputSpec | int | None, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like :func:`load_image`, also returning the file's original (H, W); ``path`` may be an open binary file.

    ``max_side`` (with ``spec=None``): a larger image comes back reduced by an integer factor so that
    its longer side is at most ``max_side`` (memory bounded by it, not by the file).
    """
    spec = None if spec is None else InputSpec.of(spec)
    im, orig = _open_reduced(Path(path) if isinstance(path, (str, os.PathLike)) else path, max_side)
    rgb = pil_to_rgb(im)
    if spec is not None:
        # Resize after the 8-bit conversion so every mode goes through the same (antialiased) filter.
        rgb = prepare_image(rgb, spec)
    return np.ascontiguousarray(rgb), orig


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 1|3) -> uint8 (H, W, channels): grey is the luma of RGB (Pillow's "L"), RGB repeats grey."""
    have = img.shape[2]
    if have == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=2)
    return np.asarray(Image.fromarray(img).convert("L"))[:, :, None]


def is_grey(img: np.ndarray) -> bool:
    """True when an (H, W, C) image holds no colour: one channel, or three equal ones."""
    return img.shape[2] == 1 or bool((img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all())


def prepare_image(img: np.ndarray, spec: InputSpec | int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H', W', C) as the spec wants it (bilinear): how data sets and every scoring path
    bring an image to a model, so that scoring a new file matches training on one."""
    spec = InputSpec.of(spec)
    h, w = spec.shape(*img.shape[:2])
    if img.shape[:2] != (h, w):
        img = np.array(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
    return to_channels(img, spec.channels)


def resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W) float map to ``size`` = (H', W'): float32 (H', W'), values not quantised.

    The one way maps are brought to another resolution: heat maps to an image's size, anomaly maps to the
    masks' for pixel metrics.
    """
    h = np.asarray(amap, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"a map must be 2-D (H, W), got shape {h.shape}")
    out_h, out_w = size
    if (out_h, out_w) == h.shape:
        return h.copy()
    # Pillow takes (width, height); a float32 array becomes a mode "F" image, so values stay unquantised.
    return np.asarray(Image.fromarray(h).resize((out_w, out_h), Image.Resampling.BILINEAR), dtype=np.float32)


def load_image(path: str | os.PathLike[str], spec: InputSpec | int | None) -> np.ndarray:
    """Read an image file as uint8 (H, W, C) as ``spec`` wants it (an int S: RGB S x S); None keeps the original."""
    return load_image_with_size(path, spec)[0]


def load_mask(path: str | os.PathLike[str], size: tuple[int, int] | int | None) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W): any non-zero colour channel is anomalous.

    ``size``: the (H, W) to resize to (nearest neighbour; an int S means S x S), None the file's own.
    """
    path = Path(path)
    im = _open(path)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette index 0 need not be black: compare colours, not indices
    a = np.asarray(im)
    if a.ndim == 3:  # (H, W, bands): compare the colour bands, never the alpha band
        a = a[:, :, 0] if a.shape[2] == 2 else a[:, :, :3].max(axis=2)
    binary = a > 0
    if size is not None:
        binary = resize_mask(binary, (size, size) if isinstance(size, (int, np.integer)) else tuple(size))
    return np.ascontiguousarray(binary)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) mask at ``size`` = (H', W'), nearest neighbour."""
    if mask.shape == tuple(size):
        return mask
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(small) > 0


def image_to_array(img: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W) in [-1, 1], C = 1 or 3 (numpy only: ONNX inference needs no
    torch)."""
    if img.dtype != np.uint8 or img.ndim < 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"expected a uint8 (..., H, W, 3) or (..., H, W, 1) array, got {img.dtype} {img.shape}")
    return np.moveaxis(img, -1, -3).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float32 torch tensor (..., C, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image_to_array(img)))


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3); values outside [-1, 1] are clipped."""
    if t.dim() < 3 or t.shape[-3] != 3:
        raise ValueError(f"expected a (..., 3, H, W) tensor, got shape {tuple(t.shape)}")
    import torch

    u = ((t.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u.movedim(-3, -1).cpu().numpy()
