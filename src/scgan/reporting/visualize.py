"""Heat-map pictures (SPEC section 4): a blue-to-red colormap laid over the image, 0.7 x heat + 0.3 x image."""
from __future__ import annotations

import matplotlib
import numpy as np
from scipy import ndimage

from scgan.data.io import resize_map, resize_mask

CONTOUR_COLOR = (255, 255, 255)  # white: stands out on every colour of "jet"
_JET = matplotlib.colormaps["jet"]


def _check_heat(heat: np.ndarray) -> np.ndarray:
    """Validate an (H, W) heat map; return it as float32."""
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"a heat map must be 2-D (H, W), got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("the heat map contains NaN or infinite values")
    return h


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) uint8 view of an (H, W), (H, W, 1) or (H, W, 3) uint8 image."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 in [0, 255], got dtype {img.dtype}; convert with (x * 255).round()")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (H, W), got shape {img.shape}")
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) heat in [0, 1] -> (H, W, 3) uint8 through matplotlib's "jet" (0 blue, 1 red); values are clipped."""
    h = np.clip(_check_heat(heat), 0.0, 1.0)
    return _JET(h, bytes=True)[..., :3]


def mask_contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool inner boundary of a mask: its pixels within ``width`` 4-steps of outside (or of the image edge)."""
    if width < 1:
        raise ValueError(f"contour width must be >= 1 pixel, got {width}")
    m = np.asarray(mask, dtype=bool)
    return m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)


def overlay(
    image: np.ndarray,
    heat: np.ndarray,
    mask: np.ndarray | None = None,
    alpha: float = 0.7,
    *,
    contour_width: int | None = None,
) -> np.ndarray:
    """alpha x colorized heat + (1 - alpha) x image, with the mask's contour in white: (H, W, 3) uint8.

    ``image`` is (H, W, 3) uint8, ``heat`` (h, w) in [0, 1] (resized bilinearly to (H, W) if needed),
    ``mask`` (h, w) bool ground truth (resized nearest if needed) or None. The contour lies just
    inside the mask, ``contour_width`` pixels thick (default: 1 per 128 pixels of the shorter side,
    at least 1, so it stays visible when a large image is shown small).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _as_rgb(image)
    size = img.shape[:2]
    h = _check_heat(heat)
    if h.shape != size:
        h = resize_map(h, size)
    blend = alpha * colorize(h).astype(np.float32) + (1.0 - alpha) * img.astype(np.float32)
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
        if m.shape != size:
            m = resize_mask(m, size)
        width = contour_width if contour_width is not None else max(1, round(min(size) / 128))
        out[mask_contour(m, width)] = CONTOUR_COLOR
    return out


# Caption band colours: the serve page's and the report's (matplotlib's default blue and red), grey = no decision.
_BAND_COLOURS = {"anomalous": (214, 39, 40), "normal": (31, 119, 180), None: (90, 90, 90)}


def caption_band(picture: np.ndarray, lines: list[str], decision: str | None) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with a band below it holding ``lines`` of white text on the decision's colour
    (red anomalous, blue normal, grey none); the picture's pixels are unchanged. The font shrinks to fit the
    width, down to 8 px; a longer line is cut at the right edge."""
    from PIL import Image, ImageDraw, ImageFont

    img = _as_rgb(picture)
    h, w = img.shape[:2]
    size = max(8, min(16, w // 16))
    font = ImageFont.load_default(size=size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while size > 8 and max((probe.textlength(t, font=font) for t in lines), default=0) > w - 6:
        size -= 1
        font = ImageFont.load_default(size=size)
    line_h = size + max(2, size // 4)
    band = Image.new("RGB", (w, line_h * len(lines) + 6), _BAND_COLOURS.get(decision, _BAND_COLOURS[None]))
    draw = ImageDraw.Draw(band)
    for i, text in enumerate(lines):
        draw.text((3, 3 + i * line_h), text, fill=(255, 255, 255), font=font)
    return np.concatenate([img, np.asarray(band)], axis=0)
