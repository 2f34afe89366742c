"""The BEV grid: bounds, cell size, shape, and point -> cell quantization.

Conventions (same as BEVFusion's ``xbound``/``ybound``/``zbound``): each bound is ``(lower, upper, step)``
in metres in the LiDAR frame (x forward, y left, z up). Cell ``i`` along an axis covers
``[lower + i * step, lower + (i + 1) * step)``; the axis has ``round((upper - lower) / step)`` cells.
Quantization uses ``floor`` (LSS/BEVFusion use ``.long()``, which truncates toward zero and so also puts
points up to one cell *below* ``lower`` into cell 0; ``floor`` drops them, as the bounds say).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Bound = tuple[float, float, float]


def _check_bound(name: str, bound: Bound) -> int:
    if len(bound) != 3:
        raise ValueError(f"BEVGrid.{name} must be (lower, upper, step), got {bound!r}")
    lower, upper, step = (float(v) for v in bound)
    if not all(math.isfinite(v) for v in (lower, upper, step)):
        raise ValueError(f"BEVGrid.{name} must be finite, got {bound!r}")
    if step <= 0 or upper <= lower:
        raise ValueError(f"BEVGrid.{name} needs upper > lower and step > 0, got {bound!r}")
    cells = (upper - lower) / step
    count = round(cells)
    if count < 1 or abs(cells - count) > 1e-6 * max(1.0, cells):
        raise ValueError(f"BEVGrid.{name}: (upper - lower) / step must be a whole number >= 1, got {cells}")
    return count


@dataclass(frozen=True)
class BEVGrid:
    """Axis-aligned BEV voxel grid in the LiDAR frame. ``shape`` is ``(X, Y, Z)``.

    The nuScenes BEVFusion detection grid is the default: 360 x 360 cells of 0.3 m over +-54 m, one
    height bin spanning z in [-10, 10).
    """

    x_bound: Bound = (-54.0, 54.0, 0.3)
    y_bound: Bound = (-54.0, 54.0, 0.3)
    z_bound: Bound = (-10.0, 10.0, 20.0)

    def __post_init__(self) -> None:
        for name in ("x_bound", "y_bound", "z_bound"):
            bound = tuple(float(v) for v in getattr(self, name))
            _check_bound(name, bound)
            object.__setattr__(self, name, bound)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) cell counts."""
        return (_check_bound("x_bound", self.x_bound), _check_bound("y_bound", self.y_bound),
                _check_bound("z_bound", self.z_bound))

    @property
    def num_cells(self) -> int:
        x, y, z = self.shape
        return x * y * z

    def cell_coordinates(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 cell coordinates ``floor((xyz - lower) / step)`` ``[..., 3]`` and the ``[...]`` bool mask
        of points inside the grid (finite input assumed)."""
        lower = torch.tensor([self.x_bound[0], self.y_bound[0], self.z_bound[0]], dtype=torch.float64,
                             device=xyz.device)
        step = torch.tensor([self.x_bound[2], self.y_bound[2], self.z_bound[2]], dtype=torch.float64,
                            device=xyz.device)
        cells = torch.floor((xyz.to(torch.float64) - lower) / step)
        inside = (cells >= 0).all(dim=-1)
        for axis, count in enumerate(self.shape):
            inside &= cells[..., axis] < count
        return cells, inside

    def quantize(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell indices ``[..., 3]`` (int64, order x, y, z) of points ``[..., 3]`` and a ``[...]`` bool mask
        of the points inside the grid; points outside get index -1."""
        cells, inside = self.cell_coordinates(xyz)
        return torch.where(inside[..., None], cells, -1.0).to(torch.int64), inside
