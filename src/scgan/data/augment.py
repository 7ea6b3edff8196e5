"""Training-time augmentations that paste synthetic anomalies into normal images (SPEC section 3).

Every augmentation's ``apply(x, generator)`` returns an :class:`Augmented`: the augmented copy and the
mask of exactly the pixels it changed (free labels for a segmentation head); calling it returns the
image alone. The patch augmentations below paste N square patches, one after another, on a copy of a
batch (B, C, S, S) in [-1, 1]; the side of a patch is round(sqrt(patch_area) * S) pixels (at least 1), its position
uniform over the image, independently per image. Work is vectorised over the batch; only the N
patches are a Python loop. Random numbers come from ``generator`` (drawn on its device, so a CPU
generator also drives CUDA batches) or from torch's global generator when it is None.

- ``copypaste``: a patch copied from a uniform random place of the same (clean) image.
- ``copypaste_color``: the same, colour-jittered before pasting, per patch: brightness and contrast
  factors in [0.6, 1.4], saturation factor in [0.6, 1.4], hue rotated by up to +-0.1 turn (+-36
  degrees) about the grey axis; each step is clipped to the valid range, as torchvision's
  ColorJitter(0.4, 0.4, 0.4, 0.1) does.
- ``cutout``: black squares (-1). ``cutout_color``: squares of one uniform random colour each.
- ``confetti``: random-colour blobs in the spirit of Liznerski et al.'s confetti noise: rectangles
  with sides uniform in [side / 2, side], rotated by a uniform angle, so each covers 25-100% of a
  patch's area.
- ``none``: plain reconstruction (an unchanged copy).

Two more need no patch geometry: ``perlin`` (DRAEM-style Perlin-noise regions, see :class:`Perlin`)
and ``mixture`` (per image one of several sources or none, see :class:`Mixture`).

Grey images arrive as three equal channels (the data layer converts them to RGB). The colour sources
(``copypaste_color``, ``perlin``, ``cutout_color``, ``confetti``) may then paste colour into them; that is
intended: a colour stain is a defect on a grey product too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from scgan.config.schema import MIXTURE_SOURCES
from scgan.data.procedural import checker, fractal_noise, perlin_noise, stripes

# What make_patch returns: the patch's content (B, C, q, q) and an optional bool mask (B, 1, q, q) of pixels to paste.
Patch = tuple[torch.Tensor, torch.Tensor | None]

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights
_JITTER = 0.4  # brightness / contrast / saturation factors in [1 - 0.4, 1 + 0.4]
_HUE = 0.1  # hue rotation in [-0.1, 0.1] turns


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``like``'s device and dtype float32."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device).to(like.device)


def _randint(high: int, n: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """n integers uniform in [0, high), on ``like``'s device."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(high, (n,), generator=generator, device=device).to(like.device)


def _window(top: torch.Tensor, left: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advanced indices selecting a (side x side) window at per-image (top, left): batch, rows, cols."""
    offsets = torch.arange(side, device=top.device)
    batch = torch.arange(top.shape[0], device=top.device)[:, None, None]  # (B, 1, 1)
    rows = (top[:, None] + offsets)[:, :, None]  # (B, side, 1)
    cols = (left[:, None] + offsets)[:, None, :]  # (B, 1, side)
    return batch, rows, cols


def _gather(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
    """Per-image windows of x (B, C, H, W) -> (B, C, side, side)."""
    b, r, c = _window(top, left, side)
    return x[b, :, r, c].permute(0, 3, 1, 2)  # advanced indexing puts (B, side, side) first


def _scatter(
    out: torch.Tensor,
    region: torch.Tensor,
    patch: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    mask: torch.Tensor | None,
) -> None:
    """Write patch (B, C, q, q) into out at per-image (top, left), only where mask (B, 1, q, q) is set.

    ``region`` (B, 1, H, W) bool gains the pixels written (the paste geometry, whatever their values).
    """
    q = patch.shape[-1]
    b, r, c = _window(top, left, q)
    if mask is not None:
        patch = torch.where(mask, patch, out[b, :, r, c].permute(0, 3, 1, 2))
    out[b, :, r, c] = patch.permute(0, 2, 3, 1).to(out.dtype)
    written = mask.permute(0, 2, 3, 1) if mask is not None else True
    region[b, :, r, c] = region[b, :, r, c] | written


def color_jitter(patch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per image of patch (B, 3, h, w) in [-1, 1]."""
    b = patch.shape[0]
    p = (patch.float() + 1) / 2  # to [0, 1]
    grey_w = torch.tensor(_GREY, device=p.device).view(1, 3, 1, 1)
    f = 1 + _JITTER * (2 * _rand((b, 3), generator, p) - 1)  # (B, 3): brightness, contrast, saturation
    p = (p * f[:, 0, None, None, None]).clamp(0, 1)
    mean = (p * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    p = ((p - mean) * f[:, 1, None, None, None] + mean).clamp(0, 1)
    grey = (p * grey_w).sum(1, keepdim=True)
    p = ((p - grey) * f[:, 2, None, None, None] + grey).clamp(0, 1)
    # Hue: rotate colours about the grey axis (Rodrigues' formula), one angle per image.
    theta = 2 * math.pi * _HUE * (2 * _rand((b,), generator, p) - 1)
    k = torch.full((3,), 1 / math.sqrt(3), device=p.device)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=p.device) / math.sqrt(3)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    rot = cos * torch.eye(3, device=p.device) + sin * cross + (1 - cos) * torch.outer(k, k)  # (B, 3, 3)
    p = torch.einsum("bij,bjhw->bihw", rot, p).clamp(0, 1)
    return (p * 2 - 1).to(patch.dtype)


@dataclass
class Augmented:
    """An augmented batch and the pixels it changed."""

    image: torch.Tensor  # (B, C, S, S), same dtype as the input
    mask: torch.Tensor  # (B, 1, S, S) bool: pixels that differ from the input in any channel


def changed_mask(x: torch.Tensor, out: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The pixels of ``region`` (B, 1, H, W) where out differs from x in some channel: (B, 1, H, W) bool.

    A pasted pixel that happens to equal the original is no anomaly, so it is not labelled.
    """
    return region & (out != x).any(1, keepdim=True)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"augmentations take a batch (B, C, H, W), got shape {tuple(x.shape)}")


class SyntheticAnomaly:
    """Base of every augmentation: ``apply`` gives the augmented copy and its exact mask; x is left untouched."""

    name = "base"

    @classmethod
    def build(cls, n_patches: int, patch_area: float, **options: Any) -> SyntheticAnomaly:
        """The instance ``build_augmentation`` makes; patch-free sources ignore the patch geometry."""
        return cls(**options)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        """Augmented copy of x (B, C, S, S) in [-1, 1] and the mask (B, 1, S, S) of the pixels it changed."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented copy of x (B, C, S, S) in [-1, 1]; x is left untouched."""
        return self.apply(x, generator).image


class Augmentation(SyntheticAnomaly):
    """Base class: paste ``n_patches`` patches of ``patch_area`` each onto a copy of the batch."""

    def __init__(self, n_patches: int = 30, patch_area: float = 0.01) -> None:
        if not isinstance(n_patches, int) or n_patches < 0:
            raise ValueError(f"n_patches must be an integer >= 0, got {n_patches!r}")
        if not 0.0 < patch_area < 1.0:
            raise ValueError(f"patch_area must be in (0, 1) (a share of the image area), got {patch_area!r}")
        self.n_patches = n_patches
        self.patch_area = patch_area

    @classmethod
    def build(cls, n_patches: int, patch_area: float, **options: Any) -> SyntheticAnomaly:
        return cls(n_patches, patch_area, **options)

    def patch_side(self, height: int, width: int) -> int:
        """Side in pixels of a square covering patch_area of the image: round(sqrt(area * H * W)), >= 1."""
        return max(1, min(height, width, round(math.sqrt(self.patch_area * height * width))))

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        """Content (B, C, q, q) of the next patch and an optional bool mask (B, 1, q, q) of pixels to paste."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check_batch(x)
        out = x.clone()
        b, _, h, w = x.shape
        region = torch.zeros(b, 1, h, w, dtype=torch.bool, device=x.device)
        side = self.patch_side(h, w)
        for _ in range(self.n_patches):
            patch, mask = self.make_patch(x, side, generator)
            q = patch.shape[-1]
            top, left = _randint(h - q + 1, b, generator, x), _randint(w - q + 1, b, generator, x)
            _scatter(out, region, patch, top, left, mask)
        return Augmented(out, changed_mask(x, out, region))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_patches={self.n_patches}, patch_area={self.patch_area})"


class Identity(Augmentation):
    """No augmentation: an unchanged copy (plain reconstruction)."""

    name = "none"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check_batch(x)
        b, _, h, w = x.shape
        return Augmented(x.clone(), torch.zeros(b, 1, h, w, dtype=torch.bool, device=x.device))


class CopyPaste(Augmentation):
    """Squares copied from uniform random places of the same clean image (the paper's augmentation)."""

    name = "copypaste"

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        b, _, h, w = x.shape
        top, left = _randint(h - side + 1, b, generator, x), _randint(w - side + 1, b, generator, x)
        return _gather(x, top, left, side), None


class CopyPasteColor(CopyPaste):
    """CopyPaste with a random colour jitter of every patch (the paper's choice for textures)."""

    name = "copypaste_color"

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        if x.shape[1] != 3:
            raise ValueError(f"colour jitter needs RGB images (B, 3, H, W), got {x.shape[1]} channels")
        patch, _ = super().make_patch(x, side, generator)
        return color_jitter(patch, generator), None


class Cutout(Augmentation):
    """Black squares (value -1)."""

    name = "cutout"

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        return torch.full((x.shape[0], x.shape[1], side, side), -1.0, dtype=x.dtype, device=x.device), None


class CutoutColor(Augmentation):
    """Squares of one uniform random colour each."""

    name = "cutout_color"

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        b, c = x.shape[:2]
        colour = 2 * _rand((b, c, 1, 1), generator, x) - 1
        return colour.expand(b, c, side, side).to(x.dtype), None


class Confetti(Augmentation):
    """Random-colour rotated rectangles, sides uniform in [side / 2, side] (confetti noise)."""

    name = "confetti"

    def make_patch(self, x: torch.Tensor, side: int, generator: torch.Generator | None) -> Patch:
        b, c, h, w = x.shape
        # An odd window that holds the rectangle at any angle, so its centre pixel is always inside.
        q = min(h, w, 2 * math.ceil(side * math.sqrt(2) / 2) + 1)
        r = _rand((b, 3), generator, x)
        half_a = side * (0.5 + 0.5 * r[:, 0]) / 2  # half sides, (B,)
        half_b = side * (0.5 + 0.5 * r[:, 1]) / 2
        angle = (math.pi / 2) * r[:, 2]
        d = torch.arange(q, device=x.device, dtype=torch.float32) - (q - 1) / 2
        dy, dx = d.view(1, q, 1), d.view(1, 1, q)
        cos, sin = angle.cos().view(b, 1, 1), angle.sin().view(b, 1, 1)
        u, v = dy * cos + dx * sin, -dy * sin + dx * cos  # (B, q, q), rotated coordinates
        mask = (u.abs() <= half_a.view(b, 1, 1) + 1e-6) & (v.abs() <= half_b.view(b, 1, 1) + 1e-6)
        colour = 2 * _rand((b, c, 1, 1), generator, x) - 1
        return colour.expand(b, c, q, q).to(x.dtype), mask[:, None]


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) rolled by per-image (dy, dx) (B,) pixels, wrapping around."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]) % h  # (B, H)
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]) % w  # (B, W)
    return x[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


_NOISE_SAMPLES = 64  # Perlin noise is evaluated on at most this many samples across, then upsampled


def _noise_grid(h: int, w: int) -> tuple[int, int]:
    """The (rows, columns) to evaluate smooth noise on for an (h, w) image: one sample per pixel up to 64 px.

    Perlin noise is smooth within a lattice cell, and cells are at least S / 32 px here, so two or more
    samples per cell, bicubically upsampled, draw the same shapes at a fraction of the cost at S >= 128
    (region share above 0.5: 4.8% at 64 px, 4.8% at 128, 4.6% at 256; DRAEM's formula at 256 px: 4.8%).
    """
    stride = max(1, min(h, w) // _NOISE_SAMPLES)
    return math.ceil(h / stride), math.ceil(w / stride)


def _upsample(noise: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Noise (B, h', w') bicubically resized to (B, h, w); unchanged when it already has that size."""
    if noise.shape[-2:] == (h, w):
        return noise
    return F.interpolate(noise[:, None], size=(h, w), mode="bicubic", align_corners=False)[:, 0]


def _texture(b: int, h: int, w: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Procedural textures (B, 3, H, W) in [-1, 1], per image one of: fractal noise, stripes, a checkerboard.

    Each is a pattern t in [0, 1] painted between two uniform random colours. The random parameters of
    every kind are drawn for the whole batch; each kind is then rendered only for the images that use it.
    """
    base = 2 ** _randint(3, b, generator, like)  # 1, 2 or 4 cells across the coarsest of 3 octaves
    angles = 2 * math.pi * _rand((b, 3, 16, 16), generator, like)
    r = _rand((b, 4), generator, like)
    c1, c2 = (2 * _rand((b, 3, 1, 1), generator, like) - 1), (2 * _rand((b, 3, 1, 1), generator, like) - 1)
    angle, phase = math.pi * r[:, 0], 2 * math.pi * r[:, 1]
    period = (min(h, w) * (1 / 32 + r[:, 2] * (1 / 4 - 1 / 32))).clamp(min=2.0)  # S / 32 .. S / 4 px
    kind = (r[:, 3] * 3).long().clamp(max=2)
    patterns = [
        # Most of the fractal noise's mass lies in [-0.5, 0.5].
        lambda i: (0.5 + _upsample(fractal_noise(angles[i], base[i], *_noise_grid(h, w)), h, w)).clamp(0, 1),
        lambda i: stripes(angle[i], period[i], phase[i], h, w),
        lambda i: checker(angle[i], period[i], phase[i], h, w),
    ]
    t = torch.empty(b, 1, h, w, device=like.device)
    for k, pattern in enumerate(patterns):
        idx = (kind == k).nonzero().flatten()
        if idx.numel():
            t[idx] = pattern(idx)[:, None]
    return c1 + (c2 - c1) * t


class Perlin(SyntheticAnomaly):
    """DRAEM's anomalies without external data: Perlin-noise-shaped regions filled with a texture or a copy.

    Per image: Perlin noise with 2^k lattice cells across the image per axis (k uniform in {0..5}
    independently for rows and columns, as DRAEM's 2^[0, 6) at 256 px; capped at S / 2 cells so a cell
    is at least 2 px), optionally rotated by a uniform angle in [-90, 90] degrees, thresholded at
    ``threshold`` to a region M. With probability ``p_texture`` the fill A is a procedural texture
    (fractal noise, stripes or a checkerboard in two random colours), otherwise a copy of the same
    image rolled by a uniform random shift and colour-jittered (``color_jitter``). Blending is
    DRAEM's: x_aug = x (1 - M) + (1 - beta) A M + beta x M, beta uniform in [0, beta_max).
    Some images get an empty region (the noise stays below the threshold); their mask is empty.
    Grey images (three equal channels) get colour textures and jitter too: colour defects exist on
    grey products as well, and a head must not learn that colour alone means "normal".
    """

    name = "perlin"

    def __init__(
        self, threshold: float = 0.5, beta_max: float = 0.8, p_texture: float = 0.5, rotate: bool = True
    ) -> None:
        if not -1.0 < threshold < 1.0:
            raise ValueError(f"perlin threshold must be in (-1, 1) (the noise's range), got {threshold!r}")
        if not 0.0 <= beta_max < 1.0:
            raise ValueError(f"perlin beta_max must be in [0, 1), got {beta_max!r}")
        if not 0.0 <= p_texture <= 1.0:
            raise ValueError(f"perlin p_texture must be a probability in [0, 1], got {p_texture!r}")
        self.threshold, self.beta_max, self.p_texture, self.rotate = threshold, beta_max, p_texture, rotate

    def region(self, b: int, h: int, w: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        """The thresholded Perlin regions (B, 1, H, W) bool."""
        n_scales = max(1, min(6, int(math.log2(min(h, w)))))  # 2^k <= S / 2 cells
        k = _randint(n_scales, 2 * b, generator, like)
        res = 2**k
        size = 2 ** (n_scales - 1)
        angles = 2 * math.pi * _rand((b, size, size), generator, like)
        rotation = math.pi * (_rand((b,), generator, like) - 0.5) if self.rotate else None
        noise = _upsample(perlin_noise(angles, res[:b], res[b:], *_noise_grid(h, w), rotation), h, w)
        return (noise > self.threshold)[:, None]

    def fill(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """What the regions are filled with (B, 3, H, W) float32: a texture or a shifted, jittered copy."""
        b, _, h, w = x.shape
        use_texture = _rand((b,), generator, x) < self.p_texture
        fill = torch.empty(b, 3, h, w, device=x.device)
        textured, copied = use_texture.nonzero().flatten(), (~use_texture).nonzero().flatten()
        if textured.numel():
            fill[textured] = _texture(textured.numel(), h, w, generator, x)
        if copied.numel():
            n = copied.numel()
            shifted = _shift(x[copied].float(), _randint(h, n, generator, x), _randint(w, n, generator, x))
            fill[copied] = color_jitter(shifted, generator)
        return fill

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check_batch(x)
        if x.shape[1] != 3:
            raise ValueError(f"perlin anomalies need RGB images (B, 3, H, W), got {x.shape[1]} channels")
        b, _, h, w = x.shape
        region = self.region(b, h, w, generator, x)
        beta = self.beta_max * _rand((b, 1, 1, 1), generator, x)
        fill = self.fill(x, generator)
        blend = ((1 - beta) * fill + beta * x.float()).to(x.dtype)
        out = torch.where(region, blend, x)
        return Augmented(out, changed_mask(x, out, region))

    def __repr__(self) -> str:
        return (f"Perlin(threshold={self.threshold}, beta_max={self.beta_max}, p_texture={self.p_texture}, "
                f"rotate={self.rotate})")


class Mixture(SyntheticAnomaly):
    """Per image, one source drawn by weight, or no change with probability ``p_clean``.

    ``sources`` maps AUGMENTATIONS names to weights (normalised to sum 1): an image is left clean
    with probability p_clean, else augmented by source s with probability (1 - p_clean) w_s / sum(w).
    Patch sources use ``n_patches`` and ``patch_area``; ``source_options`` passes keyword options to
    a source (e.g. ``{"perlin": {"p_texture": 0.7}}``). Each source runs once on its images only.
    """

    name = "mixture"

    def __init__(
        self,
        sources: dict[str, float] | None = None,
        p_clean: float = 0.2,
        n_patches: int = 30,
        patch_area: float = 0.01,
        source_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        sources = dict(MIXTURE_SOURCES if sources is None else sources)
        options = source_options or {}
        if not sources or any(_check_name(n) == self.name for n in sources):
            raise ValueError(f"a mixture needs one or more sources other than itself, got {list(sources)}")
        if any(not isinstance(wt, (int, float)) or wt < 0 for wt in sources.values()) or sum(sources.values()) <= 0:
            raise ValueError(f"mixture weights must be numbers >= 0 with a positive sum, got {sources}")
        if not 0.0 <= p_clean <= 1.0:
            raise ValueError(f"p_clean must be a probability in [0, 1], got {p_clean!r}")
        unknown = set(options) - set(sources)
        if unknown:
            raise ValueError(f"source_options names {sorted(unknown)}, which are not among the sources {list(sources)}")
        total = sum(sources.values())
        self.weights = {n: wt / total for n, wt in sources.items()}
        self.p_clean = p_clean
        self.sources = [build_augmentation(n, n_patches, patch_area, **options.get(n, {})) for n in sources]
        # Upper edges of the clean share and of every source but the last, on [0, 1).
        cum, edges = p_clean, [p_clean]
        for wt in list(self.weights.values())[:-1]:
            cum += (1 - p_clean) * wt
            edges.append(cum)
        self._edges = edges

    @classmethod
    def build(cls, n_patches: int, patch_area: float, **options: Any) -> SyntheticAnomaly:
        return cls(n_patches=n_patches, patch_area=patch_area, **options)

    def choose(self, b: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        """Per image (B,) long: 0 = clean, i >= 1 = the i-th source."""
        u = _rand((b,), generator, like)
        return (u[:, None] >= torch.tensor(self._edges, device=u.device)).sum(1)

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check_batch(x)
        b, _, h, w = x.shape
        choice = self.choose(b, generator, x)
        out = x.clone()
        mask = torch.zeros(b, 1, h, w, dtype=torch.bool, device=x.device)
        for i, source in enumerate(self.sources, start=1):
            idx = (choice == i).nonzero().flatten()
            if idx.numel():
                aug = source.apply(x[idx], generator)
                out[idx], mask[idx] = aug.image, aug.mask
        return Augmented(out, mask)

    def __repr__(self) -> str:
        return f"Mixture({self.weights}, p_clean={self.p_clean}, sources={self.sources})"


AUGMENTATIONS: dict[str, type[SyntheticAnomaly]] = {
    "copypaste": CopyPaste,
    "copypaste_color": CopyPasteColor,
    "cutout": Cutout,
    "cutout_color": CutoutColor,
    "confetti": Confetti,
    "perlin": Perlin,
    "mixture": Mixture,
    "none": Identity,
}
AUTO_AUGMENTATION: dict[str, str] = {"texture": "copypaste_color", "object": "copypaste"}  # "auto" by category kind


def _check_name(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid augmentations: auto, {', '.join(AUGMENTATIONS)}")
    return name


def resolve_augmentation(name: str, kind: str) -> str:
    """Map "auto" to the paper's choice for the category kind (texture or object); check other names."""
    if kind not in AUTO_AUGMENTATION:
        raise ValueError(f"unknown category kind {kind!r}; valid kinds: {', '.join(AUTO_AUGMENTATION)}")
    return AUTO_AUGMENTATION[kind] if name == "auto" else _check_name(name)


def build_augmentation(
    name: str, n_patches: int = 30, patch_area: float = 0.01, **options: Any
) -> SyntheticAnomaly:
    """The augmentation called ``name`` (an AUGMENTATIONS key; resolve "auto" first).

    ``options`` are that augmentation's keyword arguments (e.g. ``p_clean`` and ``sources`` of a mixture).
    """
    if name == "auto":
        raise ValueError("'auto' depends on the category: call resolve_augmentation('auto', kind) first")
    return AUGMENTATIONS[_check_name(name)].build(n_patches, patch_area, **options)
