"""Procedural noise and textures in torch, vectorised over a batch: Perlin and fractal noise, stripes, checkers.

These are pure functions of random parameters drawn by the caller (``scgan.data.augment`` draws them from
its generator), so they hold no random state. Every map is float32 on the parameters' device.
"""
from __future__ import annotations

import math

import torch


def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic 6t^5 - 15t^4 + 10t^3: zero first and second derivatives at the lattice."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _sample_grid(
    height: int, width: int, rotation: torch.Tensor | None, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (y, x), each (B, H, W), rotated by ``rotation`` (B,) radians about the image centre."""
    y = torch.arange(height, dtype=torch.float32, device=device).view(1, height, 1)
    x = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, width)
    if rotation is None:
        return y.expand(batch, height, width), x.expand(batch, height, width)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    cos, sin = rotation.cos().view(-1, 1, 1), rotation.sin().view(-1, 1, 1)
    dy, dx = y - cy, x - cx
    return cos * dy - sin * dx + cy, sin * dy + cos * dx + cx


def perlin_noise(
    angles: torch.Tensor,
    res_y: torch.Tensor,
    res_x: torch.Tensor,
    height: int,
    width: int,
    rotation: torch.Tensor | None = None,
) -> torch.Tensor:
    """2-D Perlin noise (B, H, W), values in about [-1, 1], as DRAEM's ``rand_perlin_2d``.

    Image b has ``res_y[b]`` x ``res_x[b]`` lattice cells across the image (each <= R); ``angles``
    (B, R, R) are the gradient directions at the lattice points, of which image b uses the first
    res_y[b] x res_x[b]. The lattice wraps around, so the noise tiles and ``rotation`` (B,) radians
    rotates it without leaving the lattice (DRAEM rotates the noise image instead, filling corners with 0).
    """
    b, r = angles.shape[0], angles.shape[-1]
    dev = angles.device
    ry = res_y.view(-1, 1, 1).to(dev, torch.float32)
    rx = res_x.view(-1, 1, 1).to(dev, torch.float32)
    # Each image's gradient table with its first row and column repeated after its last (a wrap-around
    # lattice), laid out on an (R + 1) x (R + 1) grid so that corner (i + 1, j + 1) never needs wrapping.
    lattice = torch.arange(r + 1, device=dev)
    rows = lattice[None] % res_y.to(dev)[:, None]  # (B, R + 1)
    cols = lattice[None] % res_x.to(dev)[:, None]
    table = angles[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]].flatten(1)
    y, x = _sample_grid(height, width, rotation, b, dev)
    uy = torch.remainder(y * ry / height, ry)  # lattice coordinates, wrapped into [0, res)
    ux = torch.remainder(x * rx / width, rx)
    # Lattice indices stay float (exact for these small integers; integer ops are slower on CPU).
    y0 = torch.minimum(uy.floor(), ry - 1)  # a remainder can round up to res itself
    x0 = torch.minimum(ux.floor(), rx - 1)
    fy, fx = uy - y0, ux - x0
    # Corners (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets from (y0, x0).
    step = torch.tensor([0.0, r + 1.0, 1.0, r + 2.0], device=dev).view(1, 4, 1, 1)
    idx = ((y0 * (r + 1) + x0)[:, None] + step).flatten(1).long()  # (B, 4 H W)
    shape = (b, 4, height, width)
    g_y, g_x = table.cos().gather(1, idx).view(shape), table.sin().gather(1, idx).view(shape)
    offsets = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
    n = [g_y[:, k] * (fy - oy) + g_x[:, k] * (fx - ox) for k, (oy, ox) in enumerate(offsets)]  # gradient . offset
    ty = _fade(fy)
    return math.sqrt(2) * torch.lerp(torch.lerp(n[0], n[1], ty), torch.lerp(n[2], n[3], ty), _fade(fx))


def fractal_noise(
    angles: torch.Tensor, res: torch.Tensor, height: int, width: int, persistence: float = 0.5
) -> torch.Tensor:
    """Sum of Perlin octaves (B, H, W) at lattice ``res`` (B,), 2 res, 4 res, ...; one octave per angles[:, o].

    ``angles`` is (B, O, R, R) with R >= res * 2^(O-1); octave o's amplitude is persistence^o, and the sum
    is divided by the amplitudes' total so the values stay in about [-1, 1].
    """
    octaves = angles.shape[1]
    total = torch.zeros(angles.shape[0], height, width, device=angles.device)
    norm = 0.0
    for o in range(octaves):
        amp = persistence**o
        total = total + amp * perlin_noise(angles[:, o], res * 2**o, res * 2**o, height, width)
        norm += amp
    return total / norm


def stripes(angle: torch.Tensor, period: torch.Tensor, phase: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Hard-edged stripes (B, H, W) in {0, 1}: direction ``angle`` (B,) rad, ``period`` (B,) px, ``phase`` (B,) rad."""
    y, x = _sample_grid(height, width, None, angle.shape[0], angle.device)
    u = x * angle.cos().view(-1, 1, 1) + y * angle.sin().view(-1, 1, 1)
    return (torch.sin(2 * math.pi * u / period.view(-1, 1, 1) + phase.view(-1, 1, 1)) > 0).float()


def checker(angle: torch.Tensor, period: torch.Tensor, phase: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A checkerboard (B, H, W) in {0, 1}, rotated by ``angle`` (B,) rad, squares of period / 2 px."""
    y, x = _sample_grid(height, width, angle, angle.shape[0], angle.device)
    w = 2 * math.pi / period.view(-1, 1, 1)
    return (torch.sin(w * y + phase.view(-1, 1, 1)) * torch.sin(w * x) > 0).float()
