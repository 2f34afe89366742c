"""BEVPoolPlan: everything about the frustum -> BEV assignment that does not change from frame to frame.

Built once from the frustum geometry (``frustum_points``) and a ``BEVGrid``; valid for as long as the
intrinsics, extrinsics, image augmentation and grid stay the same. Rebuilding it is a quantize + one sort.

Index conventions (all int64):

- *frustum index* ``p`` of point (b, n, d, h, w): ``(((b * N + n) * D + d) * H + h) * W + w`` — the
  row-major flattening of ``[B, N, D, H, W]``; ``depth_probs.reshape(-1)[p]`` is that point's weight and
  ``point_feats[p]`` its classic-form feature row.
- *pixel index* of the same point: ``((b * N + n) * W + w) * H + h`` — the row of
  ``feats.permute(0, 1, 4, 3, 2).reshape(-1, C)`` (column-major pixels: the points of one BEV cell mostly
  come from consecutive rows h of one image column w, so their feature rows are adjacent in memory).
- *cell index*: ``((b * X + x) * Y + y) * Z + z`` — the row of the channels-last output
  ``[B, X, Y, Z, C]`` (viewed as ``[B*X*Y*Z, C]``).

Tensors (``as_tensors()`` returns exactly these, plus the two shape vectors):

- ``point_index [K]``: frustum index of every in-grid point, sorted by cell, and within a cell by
  (b, n, w, d, h); ``K`` is the number of in-grid points.
- ``pixel_index [K]``: pixel index of the same points.
- ``cell_offsets [B*X*Y*Z + 1]``: CSR row pointer — points of cell ``c`` are ``[cell_offsets[c],
  cell_offsets[c+1])`` in the sorted arrays (empty cells have equal bounds).
- ``interval_cells [M]``, ``interval_starts [M]``, ``interval_lengths [M]``: the ``M`` non-empty cells and
  their runs in the sorted arrays (BEVFusion's intervals).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .grid import BEVGrid

_TENSOR_FIELDS = ("point_index", "pixel_index", "cell_offsets", "interval_cells", "interval_starts",
                  "interval_lengths")


@dataclass
class BEVPoolPlan:
    """Cached frustum -> BEV pooling plan (see the module docstring for the index conventions)."""

    geometry_shape: tuple[int, int, int, int, int]  # (B, N, D, H, W) it was built for
    grid_shape: tuple[int, int, int]  # (X, Y, Z)
    point_index: torch.Tensor
    pixel_index: torch.Tensor
    cell_offsets: torch.Tensor
    interval_cells: torch.Tensor
    interval_starts: torch.Tensor
    interval_lengths: torch.Tensor
    _backward_cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_geometry(cls, frustum_xyz: torch.Tensor, grid: BEVGrid) -> "BEVPoolPlan":
        """Quantize ``frustum_xyz [B, N, D, H, W, 3]`` (LiDAR frame) to ``grid``, drop points outside it,
        sort by cell and record the intervals. Raises ``ValueError`` on a wrong shape or NaN/inf."""
        if not isinstance(frustum_xyz, torch.Tensor) or frustum_xyz.dim() != 6 or frustum_xyz.shape[-1] != 3:
            shape = tuple(frustum_xyz.shape) if isinstance(frustum_xyz, torch.Tensor) else type(frustum_xyz)
            raise ValueError(f"frustum_xyz must be a [B, N, D, H, W, 3] tensor, got {shape}")
        if not frustum_xyz.is_floating_point():
            raise ValueError(f"frustum_xyz must be floating point, got {frustum_xyz.dtype}")
        if not isinstance(grid, BEVGrid):
            raise ValueError(f"grid must be a BEVGrid, got {type(grid).__name__}")
        finite = torch.isfinite(frustum_xyz)
        if not bool(finite.all()):
            bad = int((~finite.all(dim=-1)).sum())
            raise ValueError(f"frustum_xyz contains NaN or inf at {bad} of "
                             f"{frustum_xyz[..., 0].numel()} points: fix the calibration/augmentation inputs")
        batch, cams, depth, height, width = (int(v) for v in frustum_xyz.shape[:5])
        size_x, size_y, size_z = grid.shape
        device = frustum_xyz.device
        cells, inside = grid.cell_coordinates(frustum_xyz.detach())
        # Enumerate points column-major (b, n, w, d, h) so that, after the stable sort, the points of a cell
        # are ordered by pixel column then row: neighbouring feature rows, read one after the other.
        column_major = torch.arange(inside.numel(), device=device).view(
            batch, cams, depth, height, width).permute(0, 1, 4, 2, 3).reshape(-1)
        point_index = column_major[inside.reshape(-1)[column_major]]
        kept = cells.reshape(-1, 3)[point_index].to(torch.int64)
        batch_index = point_index // (cams * depth * height * width)
        cell = ((batch_index * size_x + kept[:, 0]) * size_y + kept[:, 1]) * size_z + kept[:, 2]
        del cells, inside, kept, column_major
        cell, order = torch.sort(cell, stable=True)
        point_index = point_index[order]
        width_index = point_index % width
        height_index = (point_index // width) % height
        camera_index = point_index // (width * height * depth)  # b * N + n
        pixel_index = (camera_index * width + width_index) * height + height_index
        num_cells = batch * size_x * size_y * size_z
        counts = torch.bincount(cell, minlength=num_cells)
        cell_offsets = torch.zeros(num_cells + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=cell_offsets[1:])
        interval_cells = torch.nonzero(counts).squeeze(1)
        return cls((batch, cams, depth, height, width), (size_x, size_y, size_z), point_index, pixel_index,
                   cell_offsets, interval_cells, cell_offsets[interval_cells], counts[interval_cells])

    # ------------------------------------------------------------------ plain-tensor form

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """The plan as plain int64 tensors (for saving, or for running beside ONNX/TensorRT engines)."""
        out = {name: getattr(self, name) for name in _TENSOR_FIELDS}
        out["geometry_shape"] = torch.tensor(self.geometry_shape, dtype=torch.int64)
        out["grid_shape"] = torch.tensor(self.grid_shape, dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "BEVPoolPlan":
        """Inverse of ``as_tensors`` (validates names, dtypes and sizes; does not re-sort)."""
        missing = [name for name in (*_TENSOR_FIELDS, "geometry_shape", "grid_shape") if name not in tensors]
        if missing:
            raise ValueError(f"BEVPoolPlan.from_tensors: missing {missing}")
        geometry_shape = tuple(int(v) for v in tensors["geometry_shape"].tolist())
        grid_shape = tuple(int(v) for v in tensors["grid_shape"].tolist())
        if len(geometry_shape) != 5 or len(grid_shape) != 3:
            raise ValueError(f"BEVPoolPlan.from_tensors: geometry_shape must have 5 entries and grid_shape 3, "
                             f"got {geometry_shape} and {grid_shape}")
        fields = {}
        for name in _TENSOR_FIELDS:
            tensor = tensors[name]
            if tensor.dtype != torch.int64 or tensor.dim() != 1:
                raise ValueError(f"BEVPoolPlan.from_tensors: {name} must be a 1-D int64 tensor, "
                                 f"got {tensor.dtype} {tuple(tensor.shape)}")
            fields[name] = tensor
        plan = cls(geometry_shape, grid_shape, **fields)
        plan.validate()
        return plan

    def validate(self) -> None:
        """Cheap consistency checks (sizes, devices, index ranges); raises ``ValueError``."""
        batch, cams, depth, height, width = self.geometry_shape
        num_points = batch * cams * depth * height * width
        num_pixels = batch * cams * height * width
        num_cells = batch * self.grid_shape[0] * self.grid_shape[1] * self.grid_shape[2]
        kept = self.point_index.numel()
        devices = {getattr(self, name).device for name in _TENSOR_FIELDS}
        if len(devices) != 1:
            raise ValueError(f"BEVPoolPlan tensors are on several devices: {sorted(map(str, devices))}")
        if self.pixel_index.numel() != kept:
            raise ValueError(f"pixel_index has {self.pixel_index.numel()} entries, point_index {kept}")
        if self.cell_offsets.numel() != num_cells + 1:
            raise ValueError(f"cell_offsets has {self.cell_offsets.numel()} entries, expected {num_cells + 1}")
        if not (self.interval_cells.numel() == self.interval_starts.numel() == self.interval_lengths.numel()):
            raise ValueError("interval_cells, interval_starts and interval_lengths differ in length")
        if kept:
            if int(self.point_index.min()) < 0 or int(self.point_index.max()) >= num_points:
                raise ValueError(f"point_index out of range [0, {num_points})")
            if int(self.pixel_index.min()) < 0 or int(self.pixel_index.max()) >= num_pixels:
                raise ValueError(f"pixel_index out of range [0, {num_pixels})")
        if int(self.cell_offsets[0]) != 0 or int(self.cell_offsets[-1]) != kept or \
                bool((self.cell_offsets[1:] < self.cell_offsets[:-1]).any()):
            raise ValueError(f"cell_offsets must rise from 0 to {kept}")
        if self.interval_cells.numel():
            if int(self.interval_cells.min()) < 0 or int(self.interval_cells.max()) >= num_cells:
                raise ValueError(f"interval_cells out of range [0, {num_cells})")
            if int((self.interval_starts + self.interval_lengths).max()) > kept or \
                    int(self.interval_starts.min()) < 0:
                raise ValueError("intervals reach outside the sorted points")
        counts = self.cell_offsets[1:] - self.cell_offsets[:-1]
        nonempty = torch.nonzero(counts).squeeze(1)
        if not (torch.equal(nonempty, self.interval_cells)
                and torch.equal(self.cell_offsets[nonempty], self.interval_starts)
                and torch.equal(counts[nonempty], self.interval_lengths)):
            raise ValueError("interval_cells/starts/lengths do not match cell_offsets (the plan's two views of "
                             "the same CSR structure)")

    # ------------------------------------------------------------------ misc

    @property
    def device(self) -> torch.device:
        return self.point_index.device

    @property
    def num_points(self) -> int:
        """In-grid frustum points K."""
        return int(self.point_index.numel())

    @property
    def num_cells(self) -> int:
        """B * X * Y * Z output cells."""
        return int(self.cell_offsets.numel()) - 1

    def to(self, device: torch.device | str) -> "BEVPoolPlan":
        """A copy of the plan on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.point_index.device == device:
            return self
        return BEVPoolPlan(self.geometry_shape, self.grid_shape,
                           **{name: getattr(self, name).to(device) for name in _TENSOR_FIELDS})

    def cell_of_points(self) -> torch.Tensor:
        """Cell index of every sorted point ``[K]`` (expanded from the intervals; cached)."""
        cached = self._backward_cache.get("cell_of_points")
        if cached is None:
            cached = torch.repeat_interleave(self.interval_cells, self.interval_lengths,
                                             output_size=self.num_points)
            self._backward_cache["cell_of_points"] = cached
        return cached

    def check_geometry_shape(self, shape: tuple[int, ...], what: str) -> None:
        if tuple(shape) != self.geometry_shape:
            raise ValueError(f"{what} has geometry (B, N, D, H, W) = {tuple(shape)} but the plan was built for "
                             f"{self.geometry_shape}: rebuild the plan for this geometry")
