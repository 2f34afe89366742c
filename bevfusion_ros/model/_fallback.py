"""Temporary pure-torch stand-ins used only while ``sparse_conv`` / ``bev_pool`` lack an entry point.

They follow the libraries' documented signatures so the model code never changes; the final model uses
the libraries (``bevfusion_ros.model.lidar`` / ``view_transform`` pick the library whenever it provides the
function). Dense 3-D convolution here is for tiny test inputs only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def voxelize(points, voxel_size, point_range, max_points_per_voxel=10, max_voxels=20000, reduce="mean"):
    vs = torch.tensor(voxel_size, dtype=torch.float32, device=points.device)
    lo = torch.tensor(point_range[:3], dtype=torch.float32, device=points.device)
    hi = torch.tensor(point_range[3:], dtype=torch.float32, device=points.device)
    keep = ((points[:, :3] >= lo) & (points[:, :3] < hi)).all(1)
    pts = points[keep]
    grid = torch.round((hi - lo) / vs).long()
    cells = torch.floor((pts[:, :3] - lo) / vs).long().clamp(min=torch.zeros_like(grid), max=grid - 1)
    key = (cells[:, 0] * grid[1] + cells[:, 1]) * grid[2] + cells[:, 2]
    uniq, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    feats = torch.zeros(len(uniq), points.shape[1], dtype=points.dtype, device=points.device)
    feats.index_add_(0, inv, pts)
    feats = feats / counts[:, None].to(points.dtype)
    coords = torch.stack([uniq // (grid[1] * grid[2]), (uniq // grid[2]) % grid[1], uniq % grid[2]], 1)
    return feats[:max_voxels], coords[:max_voxels].int(), counts[:max_voxels].int()


def batch_voxelize(points_list, voxel_size, point_range, max_points_per_voxel=10, max_voxels=20000, reduce="mean"):
    feats, coords = [], []
    for b, pts in enumerate(points_list):
        f, c, _ = voxelize(pts, voxel_size, point_range, max_points_per_voxel, max_voxels, reduce)
        feats.append(f)
        coords.append(torch.cat([torch.full_like(c[:, :1], b), c], 1))
    return torch.cat(feats), torch.cat(coords)


class SparseEncoder(nn.Module):
    """Dense-3D-conv equivalent of BEVFusion's SparseEncoder (same strides/paddings, no sparsity)."""

    def __init__(self, in_channels, sparse_shape, base_channels=16, output_channels=128,
                 encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
                 encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (1, 1, 0)), (0, 0)), block_type="basicblock"):
        super().__init__()
        self.sparse_shape = tuple(sparse_shape)
        layers = [nn.Conv3d(in_channels, base_channels, 3, 1, 1, bias=False), nn.BatchNorm3d(base_channels),
                  nn.ReLU()]
        cin = base_channels
        for i, (chans, pads) in enumerate(zip(encoder_channels, encoder_paddings)):
            for j, cout in enumerate(chans):
                if j == len(chans) - 1 and i != len(encoder_channels) - 1:
                    pad = pads[j] if isinstance(pads[j], (list, tuple)) else (pads[j],) * 3
                    layers += [nn.Conv3d(cin, cout, 3, 2, tuple(pad), bias=False), nn.BatchNorm3d(cout), nn.ReLU()]
                else:
                    layers += [nn.Conv3d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU()]
                cin = cout
        layers += [nn.Conv3d(cin, output_channels, (1, 1, 3), (1, 1, 2), 0, bias=False),
                   nn.BatchNorm3d(output_channels), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, feats, coords, batch_size):
        X, Y, Z = self.sparse_shape
        dense = feats.new_zeros(batch_size, feats.shape[1], X, Y, Z)
        c = coords.long()
        dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = feats
        out = self.net(dense)  # B, C, X, Y, Z
        b, ch, x, y, z = out.shape
        return out.permute(0, 1, 4, 2, 3).reshape(b, ch * z, x, y)


@dataclass
class BEVPoolPlan:
    index: torch.Tensor      # flat frustum index of kept points
    cell: torch.Tensor       # flat cell index (b, z, x, y) of kept points
    batch: int
    shape: tuple

    @staticmethod
    def from_geometry(frustum_xyz, grid):
        cells, inside = grid.quantize(frustum_xyz)
        B = frustum_xyz.shape[0]
        X, Y, Z = grid.shape
        b = torch.arange(B, device=frustum_xyz.device).view(B, *([1] * (frustum_xyz.dim() - 2))).expand(inside.shape)
        flat = (((b * Z + cells[..., 2]) * X + cells[..., 0]) * Y + cells[..., 1])
        idx = torch.nonzero(inside.reshape(-1)).squeeze(1)
        return BEVPoolPlan(idx, flat.reshape(-1)[idx], B, (X, Y, Z))


def pool_fused(plan, depth_probs, feats):
    B, N, D, H, W = depth_probs.shape
    C = feats.shape[2]
    X, Y, Z = plan.shape
    # frustum index order is [B, N, D, H, W]
    prod = depth_probs.unsqueeze(3) * feats.unsqueeze(2)            # B,N,D,C,H,W
    prod = prod.permute(0, 1, 2, 4, 5, 3).reshape(-1, C)             # (B N D H W), C
    out = prod.new_zeros(B * Z * X * Y, C)
    out.index_add_(0, plan.cell, prod[plan.index])
    out = out.view(B, Z, X, Y, C).permute(0, 4, 1, 2, 3).reshape(B, C * Z, X, Y)
    return out
