"""LSS depth network with BEVFusion's optional LiDAR-depth input (DepthLSSTransform.get_cam_feats).

``image features [M, C_in, h, w]`` (+ ``lidar depth [M, 1, H, W]`` at input-image resolution, 0 where
no point projects) -> ``depth_probs [M, D, h, w]`` (softmax over depth bins) and
``context [M, C_out, h, w]``. The outer product depth x context is *not* formed here: ``bev_pool``
fuses it into the pooling so the frustum tensor is never materialized.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bevfusion_ros.model.camera import conv_bn_relu


class LidarDepthEncoder(nn.Module):
    """BEVFusion's ``dtransform``: 1x1 conv, then 5x5 strided convs down to the feature stride."""

    def __init__(self, channels: list[int], stride: int):
        super().__init__()
        steps = int(round(math.log2(stride)))
        if 2 ** steps != stride or steps < 1:
            raise ValueError(f"feature stride must be a power of two >= 2, got {stride}")
        # BEVFusion (stride 8): 1->8 (1x1), 8->32 (5x5 s4), 32->64 (5x5 s2).
        strides = [4] + [2] * (steps - 2) if steps >= 2 else [2]
        layers: list[nn.Module] = [conv_bn_relu(1, channels[0], 1)]
        cin = channels[0]
        for i, s in enumerate(strides):
            cout = channels[min(i + 1, len(channels) - 1)]
            layers += [nn.Conv2d(cin, cout, 5, s, 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.layers(depth)


class DepthNet(nn.Module):
    def __init__(self, in_channels: int, depth_bins: int, out_channels: int, stride: int,
                 lidar_depth: bool, depth_channels: list[int], convs: int = 2):
        super().__init__()
        self.depth_bins = depth_bins
        self.out_channels = out_channels
        self.lidar_depth = LidarDepthEncoder(depth_channels, stride) if lidar_depth else None
        cin = in_channels + (self.lidar_depth.out_channels if self.lidar_depth is not None else 0)
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers.append(conv_bn_relu(cin, in_channels, 3))
            cin = in_channels
        layers.append(nn.Conv2d(cin, depth_bins + out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor, lidar_depth: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lidar_depth is not None:
            if lidar_depth is None:
                lidar_depth = feats.new_zeros(feats.shape[0], 1, *(s * self._stride(feats) for s in feats.shape[-2:]))
            d = self.lidar_depth(lidar_depth)
            if d.shape[-2:] != feats.shape[-2:]:
                raise ValueError(f"lidar depth map encodes to {tuple(d.shape[-2:])}, image features are "
                                 f"{tuple(feats.shape[-2:])}: the depth map must be at input-image resolution")
            feats = torch.cat([d, feats], dim=1)
        out = self.net(feats)
        depth = out[:, : self.depth_bins].softmax(dim=1)
        context = out[:, self.depth_bins:]
        return depth, context

    def _stride(self, feats: torch.Tensor) -> int:
        total = 1
        for m in self.lidar_depth.layers:
            if isinstance(m, nn.Conv2d):
                total *= m.stride[0]
        return total
