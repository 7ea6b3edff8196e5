"""Training-time augmentations that paste synthetic anomalies into normal images (SPEC section 3).

Each augmentation pastes N square patches, one after another, on a copy of a batch (B, C, S, S) in
[-1, 1]; the side of a patch is round(sqrt(patch_area) * S) pixels (at least 1), its position
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
"""
from __future__ import annotations

import math

import torch

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
    out: torch.Tensor, patch: torch.Tensor, top: torch.Tensor, left: torch.Tensor, mask: torch.Tensor | None
) -> None:
    """Write patch (B, C, q, q) into out at per-image (top, left), only where mask (B, 1, q, q) is set."""
    q = patch.shape[-1]
    b, r, c = _window(top, left, q)
    if mask is not None:
        patch = torch.where(mask, patch, out[b, :, r, c].permute(0, 3, 1, 2))
    out[b, :, r, c] = patch.permute(0, 2, 3, 1).to(out.dtype)


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


class Augmentation:
    """Base class: paste ``n_patches`` patches of ``patch_area`` each onto a copy of the batch."""

    name = "base"

    def __init__(self, n_patches: int = 30, patch_area: float = 0.01) -> None:
        if not isinstance(n_patches, int) or n_patches < 0:
            raise ValueError(f"n_patches must be an integer >= 0, got {n_patches!r}")
        if not 0.0 < patch_area < 1.0:
            raise ValueError(f"patch_area must be in (0, 1) (a share of the image area), got {patch_area!r}")
        self.n_patches = n_patches
        self.patch_area = patch_area

    def patch_side(self, height: int, width: int) -> int:
        """Side in pixels of a square covering patch_area of the image: round(sqrt(area * H * W)), >= 1."""
        return max(1, min(height, width, round(math.sqrt(self.patch_area * height * width))))

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Content (B, C, q, q) of the next patch and an optional bool mask (B, 1, q, q) of pixels to paste."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented copy of x (B, C, S, S) in [-1, 1]; x is left untouched."""
        if x.dim() != 4:
            raise ValueError(f"augmentations take a batch (B, C, H, W), got shape {tuple(x.shape)}")
        out = x.clone()
        b, _, h, w = x.shape
        side = self.patch_side(h, w)
        for _ in range(self.n_patches):
            patch, mask = self.make_patch(x, side, generator)
            q = patch.shape[-1]
            top, left = _randint(h - q + 1, b, generator, x), _randint(w - q + 1, b, generator, x)
            _scatter(out, patch, top, left, mask)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_patches={self.n_patches}, patch_area={self.patch_area})"


class Identity(Augmentation):
    """No augmentation: an unchanged copy (plain reconstruction)."""

    name = "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.clone()


class CopyPaste(Augmentation):
    """Squares copied from uniform random places of the same clean image (the paper's augmentation)."""

    name = "copypaste"

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, _, h, w = x.shape
        top, left = _randint(h - side + 1, b, generator, x), _randint(w - side + 1, b, generator, x)
        return _gather(x, top, left, side), None


class CopyPasteColor(CopyPaste):
    """CopyPaste with a random colour jitter of every patch (the paper's choice for textures)."""

    name = "copypaste_color"

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.shape[1] != 3:
            raise ValueError(f"colour jitter needs RGB images (B, 3, H, W), got {x.shape[1]} channels")
        patch, _ = super().make_patch(x, side, generator)
        return color_jitter(patch, generator), None


class Cutout(Augmentation):
    """Black squares (value -1)."""

    name = "cutout"

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.full((x.shape[0], x.shape[1], side, side), -1.0, dtype=x.dtype, device=x.device), None


class CutoutColor(Augmentation):
    """Squares of one uniform random colour each."""

    name = "cutout_color"

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, c = x.shape[:2]
        colour = 2 * _rand((b, c, 1, 1), generator, x) - 1
        return colour.expand(b, c, side, side).to(x.dtype), None


class Confetti(Augmentation):
    """Random-colour rotated rectangles, sides uniform in [side / 2, side] (confetti noise)."""

    name = "confetti"

    def make_patch(
        self, x: torch.Tensor, side: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
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


AUGMENTATIONS: dict[str, type[Augmentation]] = {
    "copypaste": CopyPaste,
    "copypaste_color": CopyPasteColor,
    "cutout": Cutout,
    "cutout_color": CutoutColor,
    "confetti": Confetti,
    "none": Identity,
}
KINDS: dict[str, str] = {"texture": "copypaste_color", "object": "copypaste"}  # what "auto" means


def _check_name(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid augmentations: auto, {', '.join(AUGMENTATIONS)}")
    return name


def resolve_augmentation(name: str, kind: str) -> str:
    """Map "auto" to the paper's choice for the category kind (texture or object); check other names."""
    if kind not in KINDS:
        raise ValueError(f"unknown category kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return KINDS[kind] if name == "auto" else _check_name(name)


def build_augmentation(name: str, n_patches: int = 30, patch_area: float = 0.01) -> Augmentation:
    """The augmentation called ``name`` (an AUGMENTATIONS key; resolve "auto" first)."""
    if name == "auto":
        raise ValueError("'auto' depends on the category: call resolve_augmentation('auto', kind) first")
    return AUGMENTATIONS[_check_name(name)](n_patches, patch_area)
