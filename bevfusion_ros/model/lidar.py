"""LiDAR branch: hard voxelization (mean of points per voxel) + ``sparse_conv.SparseEncoder`` -> BEV.

Voxelization and the sparse encoder run in torch in every back-end (data-dependent shapes); their output
``lidar_bev [B, C_out * Z_out, X_out, Y_out]`` is the first input of the exportable ``bev_head``.
"""
from __future__ import annotations

import torch
from torch import nn

import sparse_conv
from bevfusion_ros.model.config import ModelConfig


def _pad_of(pad) -> tuple[int, int, int]:
    return tuple(pad) if isinstance(pad, (list, tuple)) else (int(pad),) * 3


def encoder_output_shape(config: ModelConfig) -> tuple[int, int, int]:
    """(channels, X, Y) of the dense BEV the SparseEncoder produces (BEVFusion's stride/padding rules:
    every stage but the last ends with a k3 s2 conv padded by its last padding; conv_out is k(1,1,3) s(1,1,2))."""
    x, y, z = config.sparse_shape
    stages = config.lidar.encoder_channels
    for i, pads in enumerate(config.lidar.encoder_paddings):
        if i == len(stages) - 1:
            break
        px, py, pz = _pad_of(pads[-1])
        x, y, z = (x + 2 * px - 3) // 2 + 1, (y + 2 * py - 3) // 2 + 1, (z + 2 * pz - 3) // 2 + 1
    z = (z - 3) // 2 + 1
    return config.lidar.output_channels * z, x, y


class LidarEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        lc = config.lidar
        self.voxel_size = list(lc.voxel_size)
        self.point_range = list(config.point_cloud_range)
        self.max_points = lc.max_points_per_voxel
        self.max_voxels = (lc.max_voxels_train, lc.max_voxels_test)
        self.in_channels = lc.in_channels
        self.encoder = sparse_conv.SparseEncoder(lc.in_channels, tuple(config.sparse_shape), lc.base_channels,
                                      lc.output_channels, [list(c) for c in lc.encoder_channels],
                                      [list(p) for p in lc.encoder_paddings], lc.block_type)
        self.out_channels, self.out_x, self.out_y = encoder_output_shape(config)

    def voxelize(self, points: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for i, pts in enumerate(points):
            if pts.dim() != 2 or pts.shape[1] < self.in_channels:
                raise ValueError(f"points[{i}] must be [N, >={self.in_channels}] (x, y, z, intensity, dt), "
                                 f"got {tuple(pts.shape)}")
        points = [p[:, : self.in_channels].float().contiguous() for p in points]
        max_voxels = self.max_voxels[0] if self.training else self.max_voxels[1]
        return sparse_conv.batch_voxelize(points, self.voxel_size, self.point_range, self.max_points, max_voxels)

    def encode(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        if feats.shape[0] == 0:  # empty cloud: the encoder would see no active site; BEV is all zeros
            return feats.new_zeros(batch_size, self.out_channels, self.out_x, self.out_y)
        bev = self.encoder(feats, coords, batch_size)
        if bev.shape[1:] != (self.out_channels, self.out_x, self.out_y):
            raise RuntimeError(f"sparse encoder produced {tuple(bev.shape)}, expected "
                               f"[B, {self.out_channels}, {self.out_x}, {self.out_y}]")
        return bev

    def forward(self, points: list[torch.Tensor]) -> torch.Tensor:
        feats, coords = self.voxelize(points)
        return self.encode(feats, coords, len(points))
