"""Shared helpers for the bev_pool tests: random geometry and a loop-free float64 brute-force reference."""
from __future__ import annotations

import pytest
import torch

from bev_pool import BEVGrid


def random_geometry(shape, grid: BEVGrid, spread: float = 1.4, seed: int = 0) -> torch.Tensor:
    """Frustum xyz ``[B, N, D, H, W, 3]`` scattered over ``spread`` x the grid extent (so ~half fall outside)."""
    generator = torch.Generator().manual_seed(seed)
    lower = torch.tensor([grid.x_bound[0], grid.y_bound[0], grid.z_bound[0]], dtype=torch.float64)
    upper = torch.tensor([grid.x_bound[1], grid.y_bound[1], grid.z_bound[1]], dtype=torch.float64)
    centre, half = (lower + upper) / 2, (upper - lower) / 2 * spread
    unit = torch.rand(*shape, 3, generator=generator, dtype=torch.float64) * 2 - 1
    return centre + unit * half


def brute_force_bev(xyz: torch.Tensor, grid: BEVGrid, point_feats: torch.Tensor) -> torch.Tensor:
    """Reference ``[B, Z*C, X, Y]``: quantize every point with floor, keep those inside, index_add in float64."""
    batch = xyz.shape[0]
    size_x, size_y, size_z = grid.shape
    lower = torch.tensor([grid.x_bound[0], grid.y_bound[0], grid.z_bound[0]], dtype=torch.float64)
    step = torch.tensor([grid.x_bound[2], grid.y_bound[2], grid.z_bound[2]], dtype=torch.float64)
    cells = torch.floor((xyz.to(torch.float64) - lower) / step).long().reshape(-1, 3)
    size = torch.tensor([size_x, size_y, size_z])
    inside = ((cells >= 0) & (cells < size)).all(dim=1)
    b_index = torch.arange(batch).repeat_interleave(xyz[0, ..., 0].numel())
    channels = point_feats.shape[1]
    flat = torch.zeros(batch, size_z, size_x, size_y, channels, dtype=torch.float64)
    flat.index_put_((b_index[inside], cells[inside, 2], cells[inside, 0], cells[inside, 1]),
                    point_feats.to(torch.float64)[inside], accumulate=True)
    return flat.permute(0, 1, 4, 2, 3).reshape(batch, size_z * channels, size_x, size_y)


def materialize(depth_probs: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """``[B*N*D*H*W, C]`` product rows in frustum order (what the fused form avoids)."""
    product = depth_probs[:, :, :, None] * feats[:, :, None]  # [B, N, D, C, H, W]
    return product.permute(0, 1, 2, 4, 5, 3).reshape(-1, feats.shape[2])


@pytest.fixture
def small_grid() -> BEVGrid:
    return BEVGrid(x_bound=(-4.0, 4.0, 1.0), y_bound=(-3.0, 3.0, 0.5), z_bound=(-2.0, 2.0, 2.0))
