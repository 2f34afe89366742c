"""Exact packed int64 keys for (batch, x, y, z) coordinates.

A coordinate is packed as ``((b * Xp + x') * Yp + y') * Zp + z'`` where ``x' = x + margin`` and
``Xp = X + 2 * margin`` (likewise y, z). The margin is the largest reach of the kernel offsets that will be
added to the keys, so ``key + offset_key`` never wraps into a neighbouring row: a shifted key either lands on
a real coordinate or on a padding cell that holds none. Keys are exact (no hashing) and order coordinates
lexicographically by (b, x, y, z).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

# Keys stay below 2**62 so that key + offset never overflows int64 either.
MAX_KEY_SPACE = 1 << 62


@dataclass(frozen=True)
class KeyLayout:
    """How coordinates of one grid are packed into int64 keys."""

    batch_size: int
    spatial_shape: tuple[int, int, int]
    margin: tuple[int, int, int]

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        return tuple(int(s + 2 * m) for s, m in zip(self.spatial_shape, self.margin))  # type: ignore[return-value]

    def offset_key(self, offset: Sequence[int]) -> int:
        """The key difference produced by moving a coordinate by ``offset`` = (dx, dy, dz)."""
        _, yp, zp = self.padded_shape
        dx, dy, dz = (int(v) for v in offset)
        return (dx * yp + dy) * zp + dz

    def pack(self, coords: torch.Tensor) -> torch.Tensor:
        """[N, 4] integer (b, x, y, z) -> [N] int64 keys (coordinates must already be in range)."""
        xp, yp, zp = self.padded_shape
        c = coords.to(torch.int64)
        mx, my, mz = self.margin
        return ((c[:, 0] * xp + (c[:, 1] + mx)) * yp + (c[:, 2] + my)) * zp + (c[:, 3] + mz)

    def unpack(self, keys: torch.Tensor) -> torch.Tensor:
        """[N] int64 keys -> [N, 4] int64 (b, x, y, z)."""
        xp, yp, zp = self.padded_shape
        mx, my, mz = self.margin
        z = keys % zp
        rest = keys // zp
        y = rest % yp
        rest = rest // yp
        x = rest % xp
        b = rest // xp
        return torch.stack([b, x - mx, y - my, z - mz], dim=1)


def make_layout(batch_size: int, spatial_shape: Sequence[int], margin: Sequence[int] = (0, 0, 0)) -> KeyLayout:
    """A key layout, refusing grids whose key space would overflow int64."""
    shape = tuple(int(s) for s in spatial_shape)
    pad = tuple(int(m) for m in margin)
    if len(shape) != 3 or len(pad) != 3:
        raise ValueError(f"spatial_shape and margin must have 3 entries, got {shape} and {pad}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    space = int(batch_size)
    for s, m in zip(shape, pad):
        space *= s + 2 * m
    if space >= MAX_KEY_SPACE:
        raise OverflowError(
            f"spatial shape {shape} with batch_size {batch_size} (margin {pad}) needs a key space of {space} "
            f"cells, more than the 2**62 that packed int64 keys can hold exactly")
    return KeyLayout(int(batch_size), shape, pad)  # type: ignore[arg-type]


def check_key_space(batch_size: int, spatial_shape: Sequence[int]) -> None:
    """Raise OverflowError if the grid cannot be keyed exactly (with margin for any small kernel)."""
    make_layout(batch_size, spatial_shape, (0, 0, 0))
