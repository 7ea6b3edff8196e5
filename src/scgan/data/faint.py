"""Faint, thin and textural synthetic defects: what surfaces show and sharp-edged pastes do not.

Each kind changes a copy of a normal batch (B, C, H, W) in [-1, 1] (C = 1 or 3, any H and W) inside a region it
draws itself, and returns the exact mask of the pixels it changed (:class:`~scgan.data.augment.Augmented`); the
same generator state gives the same defects. Sizes are in shares of the image's shorter side (thin ones in pixels at
the stored size), so that a defect covers the same part of an image at any resolution:

- ``crack``: a curvilinear random walk 1-3 px wide, darker (or, one time in five, brighter) by 0.1-0.4;
- ``spot``: a small soft-edged disc (radius 1-4% of the short side), darker or brighter by 0.1-0.5 at its centre;
- ``uneven``: a low-frequency region over 5-30% of the image whose brightness shifts by 0.05-0.25, fading to
  nothing at its edge (no sharp border to find);
- ``blend``: a patch of another image of the batch (2-8% of the area) laid over another place at opacity 0.1-0.4
  (NSA's idea, by plain alpha blending), its edges feathered;
- ``warp``: a small local displacement (a disc of radius 4-10% of the short side, moved by up to a third of its
  radius), the texture bent, no intensity added.

Intensities are in the [-1, 1] units of the images (0.2 = a tenth of the full range).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scgan.data.augment import Augmented, SyntheticAnomaly, changed_mask


def _on(generator: torch.Generator | None) -> dict:
    """Where the random numbers are drawn: on the generator's device (they are used on the CPU)."""
    return {"generator": generator, "device": generator.device if generator is not None else "cpu"}


def _rand(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, **_on(generator)).cpu()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high, (1,), **_on(generator)))


def _uniform(low: float, high: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * _rand(n, generator)


def _centres(b: int, h: int, w: int, margin: float, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Random centres (y, x) in pixels, ``margin`` pixels away from the border where the image allows it."""
    my, mx = min(margin, h / 2), min(margin, w / 2)
    return _uniform(my, h - my, b, generator), _uniform(mx, w - mx, b, generator)


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")


def _finish(x: torch.Tensor, out: torch.Tensor, region: torch.Tensor) -> Augmented:
    out = out.clamp(-1, 1).to(x.dtype)
    out = torch.where(region, out, x)  # nothing outside the region changes, whatever the arithmetic rounds
    return Augmented(out, changed_mask(x, out, region))


def _disc(b: int, h: int, w: int, radii: tuple[float, float], extra: float,
          generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """B discs anywhere in the image, of radius uniform in ``radii`` (shares of the short side) plus ``extra``
    pixels: each pixel's distance to its disc's centre in radii (B, H, W), the radii (B,), and the pixel grid."""
    radius = _uniform(*radii, b, generator) * min(h, w) + extra
    cy, cx = _centres(b, h, w, 0, generator)
    yy, xx = _grid(h, w)
    r = ((yy - cy.view(b, 1, 1)) ** 2 + (xx - cx.view(b, 1, 1)) ** 2).sqrt() / radius.view(b, 1, 1)
    return r, radius, (yy, xx)


def _signed(low: float, high: float, b: int, generator: torch.Generator | None) -> torch.Tensor:
    """B amounts uniform in [low, high), each negative or positive with equal chance."""
    sign = torch.where(_rand(b, generator) < 0.5, -1.0, 1.0)
    return sign * _uniform(low, high, b, generator)


def _add(x: torch.Tensor, amount: torch.Tensor, weight: torch.Tensor) -> Augmented:
    """x + amount (B,) x weight (B, 1, H, W) in [0, 1], changed where the weight is positive."""
    out = x.float() + (amount.view(-1, 1, 1, 1) * weight).to(x.device)
    return _finish(x, out, (weight > 0).to(x.device))


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"synthetic defects take a batch (B, 1 or 3, H, W), got shape {tuple(x.shape)}")


class Crack(SyntheticAnomaly):
    """A thin curvilinear random walk (module docstring)."""

    name = "crack"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check(x)
        b, _, h, w = x.shape
        short = min(h, w)
        region = torch.zeros(b, 1, h, w, dtype=torch.bool)
        delta = torch.empty(b)
        for i in range(b):
            steps = max(4, int(_uniform(0.2, 0.6, 1, generator).item() * short))
            y, xx = (v.item() for v in _centres(1, h, w, short * 0.2, generator))
            angle = _uniform(0, 2 * math.pi, 1, generator).item()
            turns = torch.randn(steps, **_on(generator)).cpu() * 0.25
            for t in range(steps):
                angle += turns[t].item()
                y, xx = y + math.sin(angle), xx + math.cos(angle)
                if 0 <= int(y) < h and 0 <= int(xx) < w:
                    region[i, 0, int(y), int(xx)] = True
            width = _randint(1, 4, generator)
            if width > 1:
                region[i] = F.max_pool2d(region[i].float()[None], width, 1, padding=width // 2)[0, :, :h, :w] > 0
            sign = 1.0 if _rand(1, generator).item() < 0.2 else -1.0
            delta[i] = sign * _uniform(0.1, 0.4, 1, generator).item()
        out = x.float() + delta.view(b, 1, 1, 1).to(x.device)
        return _finish(x, out, region.to(x.device))


class Spot(SyntheticAnomaly):
    """A small soft-edged disc, darker or brighter (module docstring)."""

    name = "spot"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check(x)
        b, _, h, w = x.shape
        r, _, _ = _disc(b, h, w, (0.01, 0.04), 1.0, generator)
        weight = (1 - r.clamp(max=1) ** 2)[:, None]  # 1 at the centre, 0 at the rim
        return _add(x, _signed(0.1, 0.5, b, generator), weight)


class Uneven(SyntheticAnomaly):
    """A low-frequency brightness shift over a region that fades out at its edge (module docstring)."""

    name = "uneven"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check(x)
        b, _, h, w = x.shape
        area = _uniform(0.05, 0.3, b, generator)
        # An ellipse of that area, its axes up to 2:1, rotated; the shift falls smoothly from its centre to its rim.
        aspect = _uniform(0.5, 2.0, b, generator)
        ry = (area * h * w / math.pi * aspect).sqrt()
        rx = (area * h * w / math.pi / aspect).sqrt()
        cy, cx = _centres(b, h, w, 0, generator)
        theta = _uniform(0, math.pi, b, generator)
        yy, xx = _grid(h, w)
        dy, dx = yy - cy.view(b, 1, 1), xx - cx.view(b, 1, 1)
        c, s = theta.cos().view(b, 1, 1), theta.sin().view(b, 1, 1)
        u, v = (c * dx + s * dy) / rx.view(b, 1, 1), (-s * dx + c * dy) / ry.view(b, 1, 1)
        r2 = u**2 + v**2
        weight = (0.5 + 0.5 * torch.cos(math.pi * r2.clamp(max=1).sqrt()))[:, None] * (r2 < 1)[:, None]
        return _add(x, _signed(0.05, 0.25, b, generator), weight)


class Blend(SyntheticAnomaly):
    """A feathered patch of another image of the batch at low opacity (module docstring)."""

    name = "blend"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check(x)
        b, _, h, w = x.shape
        source = (x.roll(1, dims=0) if b > 1 else x.flip(-1).flip(-2)).float().cpu()
        out = x.float().cpu().clone()
        region = torch.zeros(b, 1, h, w, dtype=torch.bool)
        for i in range(b):
            side = max(2, int(math.sqrt(_uniform(0.02, 0.08, 1, generator).item() * h * w)))
            sh, sw = min(side, h), min(side, w)
            top, left = (_randint(0, n - s + 1, generator) for n, s in ((h, sh), (w, sw)))
            stop, sleft = (_randint(0, n - s + 1, generator) for n, s in ((h, sh), (w, sw)))
            alpha = _uniform(0.1, 0.4, 1, generator).item()
            ramp = torch.minimum(torch.linspace(0, 1, sh)[:, None].minimum(torch.linspace(1, 0, sh)[:, None]),
                                 torch.linspace(0, 1, sw)[None].minimum(torch.linspace(1, 0, sw)[None]))
            feather = (ramp * 4).clamp(max=1) * alpha  # full opacity a quarter of the way in from each edge
            patch = source[i, :, stop:stop + sh, sleft:sleft + sw]
            window = out[i, :, top:top + sh, left:left + sw]
            out[i, :, top:top + sh, left:left + sw] = window + feather * (patch - window)
            region[i, 0, top:top + sh, left:left + sw] = feather > 0
        return _finish(x, out.to(x.device), region.to(x.device))


class Warp(SyntheticAnomaly):
    """A small local displacement of the texture inside a disc (module docstring)."""

    name = "warp"

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Augmented:
        _check(x)
        b, _, h, w = x.shape
        r, radius, (yy, xx) = _disc(b, h, w, (0.04, 0.1), 2.0, generator)
        angle = _uniform(0, 2 * math.pi, b, generator)
        push = _uniform(0.15, 0.33, b, generator) * radius
        bump = (0.5 + 0.5 * torch.cos(math.pi * r.clamp(max=1))) * (r < 1)
        sy = yy + bump * (push * angle.sin()).view(b, 1, 1)
        sx = xx + bump * (push * angle.cos()).view(b, 1, 1)
        grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], dim=-1)
        out = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="border",
                            align_corners=True)
        return _finish(x, out, (bump > 0)[:, None].to(x.device))


FAINT_DEFECTS: dict[str, type[SyntheticAnomaly]] = {k.name: k for k in (Crack, Spot, Uneven, Blend, Warp)}


def faint_defect(name: str) -> SyntheticAnomaly:
    """The faint defect kind called ``name`` (a FAINT_DEFECTS key); ValueError naming the valid ones."""
    if name not in FAINT_DEFECTS:
        raise ValueError(f"unknown faint defect {name!r}; valid: {', '.join(FAINT_DEFECTS)}")
    return FAINT_DEFECTS[name]()
