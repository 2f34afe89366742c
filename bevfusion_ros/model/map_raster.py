"""LiDAR ground raster on the map grid: the fine detail the map head cannot get from the fused BEV.

Why: the fused BEV of the tiny config has 1.2 m cells, and the map classes that matter most for driving
are thinner than that (stop lines ~0.5 m, zebra stripes ~0.5 m, lane dividers ~0.15 m). LiDAR sees them
directly: paint returns 5-10x the intensity of asphalt, concrete sidewalks 3x, and curbs are height steps.
A handful of per-cell statistics of the points on the map grid itself (0.5 m) carries that, for a few
milliseconds of scatter ops and no learned parameters. Like voxelization, it runs in torch outside the
exported engines; the map head takes it as a second input (``bev_head(..., map_raster)``).

Channels (``RASTER_CHANNELS``), per map cell, from every point of the multi-sweep cloud in the cell:

- ``occupied``: 1 where the cell has a point.
- ``log_count``: log(1 + points) / 4.
- ``ground_intensity_mean`` / ``ground_intensity_max``: intensity (nuScenes scale 0..255) / 64 of the
  cell's *ground* points -- those within ``GROUND_BAND_M`` of the cell's lowest point -- so a car or a
  wall in the cell does not hide the paint under it. Clipped at 4.
- ``ground_height``: lowest z + ``SENSOR_HEIGHT_M`` (about 0 on the road for a roof LiDAR), clipped to
  [-2, 2] m; 0 where empty.
- ``height_span``: (highest - lowest z) / 2, clipped to [0, 2]: what stands in the cell.

Points outside the grid, outside the z range of the point cloud, or not finite are ignored.
"""
from __future__ import annotations

import torch
from torch import nn

RASTER_CHANNELS: tuple[str, ...] = ("occupied", "log_count", "ground_intensity_mean", "ground_intensity_max",
                                    "ground_height", "height_span")
GROUND_BAND_M = 0.25
SENSOR_HEIGHT_M = 1.84     # nuScenes' roof LiDAR; only an offset that centres the channel near 0
INTENSITY_SCALE = 64.0


class LidarMapRaster(nn.Module):
    """points (list of [Ni, >=4] x, y, z, intensity, ...) -> raster [B, len(RASTER_CHANNELS), Xm, Ym]."""

    def __init__(self, xbound: list[float], ybound: list[float], z_range: tuple[float, float]):
        super().__init__()
        self.x0, self.x1, self.dx = (float(v) for v in xbound)
        self.y0, self.y1, self.dy = (float(v) for v in ybound)
        self.nx = int(round((self.x1 - self.x0) / self.dx))
        self.ny = int(round((self.y1 - self.y0) / self.dy))
        self.z_range = (float(z_range[0]), float(z_range[1]))

    @property
    def channels(self) -> int:
        return len(RASTER_CHANNELS)

    def forward(self, points: list[torch.Tensor]) -> torch.Tensor:
        rasters = [self._one(p) for p in points]
        if not rasters:
            raise ValueError("LidarMapRaster needs a list of at least one point cloud")
        return torch.stack(rasters)

    def _one(self, pts: torch.Tensor) -> torch.Tensor:
        if pts.dim() != 2 or pts.shape[1] < 4:
            raise ValueError(f"points must be [N, >=4] (x, y, z, intensity, ...), got {tuple(pts.shape)}")
        pts = pts[:, :4].float()
        cells = self.nx * self.ny
        ix = torch.floor((pts[:, 0] - self.x0) / self.dx)
        iy = torch.floor((pts[:, 1] - self.y0) / self.dy)
        z, intensity = pts[:, 2], pts[:, 3]
        keep = ((ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny) & (z >= self.z_range[0])
                & (z < self.z_range[1]) & (intensity.abs() < float("inf")))  # NaN x/y/z fail the range tests
        # Ignored points go to one extra "dump" cell, sliced off at the end: no boolean indexing, which
        # (nonzero + gather) cost more than all the reductions together.
        cell = torch.where(keep, ix * self.ny + iy, float(cells)).long()
        bins = cells + 1
        count = torch.bincount(cell, minlength=bins).to(pts.dtype)
        zmin = pts.new_full((bins,), float("inf")).scatter_reduce_(0, cell, z, "amin")
        zmax = pts.new_full((bins,), float("-inf")).scatter_reduce_(0, cell, z, "amax")
        ground = (z <= zmin[cell] + GROUND_BAND_M).to(pts.dtype)
        g_int = torch.where(ground > 0, intensity, 0.0)
        g_count = torch.bincount(cell, weights=ground.double(), minlength=bins).to(pts.dtype)
        g_sum = torch.bincount(cell, weights=g_int.double(), minlength=bins).to(pts.dtype)
        g_max = pts.new_zeros(bins).scatter_reduce_(0, cell, g_int, "amax")
        count, zmin, zmax, g_count, g_sum, g_max = (t[:cells] for t in (count, zmin, zmax, g_count, g_sum, g_max))
        occupied = count > 0
        out = pts.new_zeros(len(RASTER_CHANNELS), cells)
        out[0] = occupied.to(pts.dtype)
        out[1] = torch.log1p(count) / 4.0
        out[2] = (g_sum / g_count.clamp(min=1.0) / INTENSITY_SCALE).clamp(0.0, 4.0)
        out[3] = (g_max / INTENSITY_SCALE).clamp(0.0, 4.0)
        out[4] = torch.where(occupied, (zmin + SENSOR_HEIGHT_M).clamp(-2.0, 2.0), out[4])
        out[5] = torch.where(occupied, ((zmax - zmin) / 2.0).clamp(0.0, 2.0), out[5])
        return out.view(-1, self.nx, self.ny)
