"""Tiled scoring's plan and its bounds: where the tiles of an image start, how small a tile and how many tiles one
image may take, and a progress line with the time left when tiling runs long.

Each tile is brought to the model's working resolution and scored: a tile far smaller than that resolution is
magnified, adding no detail, and the number of tiles grows with the square of the image's side over the tile's, so
both are bounded before any scoring starts.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from scgan.utils.limits import MAX_TILES


class TileLimitError(ValueError):
    """An image that would take more tiles than :data:`scgan.utils.limits.MAX_TILES`."""


# Scores that judge each place of an image against normal images at that place (a grid over the whole image): a tile
# scored alone is judged as if it were a whole image. The fusion's ``fused`` holds map_z (the default preset's score)
# and the SCGAN's score of the tile stretched to its S x S.
POSITIONAL_SCORES = ("map_z", "fused")


def tile_origins(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with about a quarter overlap (one tile of the
    whole length when it is no longer than a tile)."""
    if length <= tile:
        return [0]
    step = max(1, tile - tile // 4)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_count(height: int, width: int, tile: int) -> int:
    """How many tiles :func:`tile_origins` lays over an image of ``height`` x ``width`` (without listing them)."""
    def along(length: int) -> int:
        if length <= tile:
            return 1
        step = max(1, tile - tile // 4)
        return -(-(length - tile) // step) + 1

    return along(height) * along(width)


def check_tile(tile: int, working: int) -> int:
    """``tile`` as an int, or ValueError unless it is at least half the working resolution ``working`` (the short
    side every tile is brought to): a tile is magnified at most twice."""
    least = -(-working // 2)
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < least:
        raise ValueError(f"tile must be at least {least} pixels (half the model's working resolution of {working}: a "
                         f"smaller tile is magnified more than twice, adding no detail), got {tile!r}")
    return tile


def check_tile_count(height: int, width: int, tile: int) -> int:
    """The number of tiles of an image, or TileLimitError stating it when it exceeds MAX_TILES."""
    n = tile_count(height, width, tile)
    if n > MAX_TILES:
        least = next(t for t in range(tile, max(height, width) + 1, max(1, tile // 8))
                     if tile_count(height, width, t) <= MAX_TILES)
        raise TileLimitError(f"an image of {width} x {height} pixels would take {n:,} tiles of {tile} pixels, more "
                             f"than the {MAX_TILES:,} allowed per image; use tiles of at least {least} pixels")
    return n


class TileProgress:
    """Reports tiled scoring that runs long: once an image has been tiling for ``after`` seconds, a line every
    ``every`` seconds with the tiles done, the time so far and an estimate of the time left (from the rate so far).

    Called as ``progress(done, total, elapsed_s)`` by the Detector after each batch of tiles.
    """

    def __init__(self, stream: TextIO | None = None, after: float = 10.0, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.after, self.every = after, every
        self.clock = clock
        self._last: float | None = None

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        if done >= total:
            self._last = None
            return
        if elapsed < self.after or (self._last is not None and self.clock() - self._last < self.every):
            return
        self._last = self.clock()
        left = elapsed / max(done, 1) * (total - done)
        print(f"tiling: {done:,} of {total:,} tiles of this image, {_duration(elapsed)} so far, about "
              f"{_duration(left)} left", file=self.stream or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``seconds`` in words a person reads at a glance: "42 s", "3 min 20 s", "2 h 5 min"."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
