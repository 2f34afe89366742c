"""Camera -> BEV view transform: frustum geometry + ``bev_pool`` (cached plan) + BEV downsample.

``CameraToBEV.plan(intrinsics, T_lidar_cam, image_aug)`` builds a ``bev_pool.BEVPoolPlan`` (sorted
ranks and intervals) for one calibration; ``CameraToBEV.pool(plan, depth_probs, cam_feats)`` pools the
depth-weighted features into ``[B, C*Z, X, Y]`` and applies BEVFusion's downsample convs. The plan is
valid while the matrices are unchanged, so the runtime rebuilds it only when calibration or the image
augmentation changes (``PerceptionPipeline.plan_rebuilds`` counts the rebuilds).

Fold the LiDAR-side augmentation (global rotation/scale/flip of training) into ``T_lidar_cam``.
"""
from __future__ import annotations

import torch
from torch import nn

import bev_pool
from bevfusion_ros.model.camera import conv_bn_relu
from bevfusion_ros.model.config import ModelConfig



class CameraToBEV(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        vt = config.vtransform
        self.grid = bev_pool.BEVGrid(tuple(vt.xbound), tuple(vt.ybound), tuple(vt.zbound))
        self.image_size = tuple(config.camera.image_size)
        self.feature_size = config.feature_size
        self.dbound = tuple(vt.dbound)
        channels = vt.out_channels * config.camera_z_bins
        if vt.downsample > 1:
            self.downsample = nn.Sequential(
                conv_bn_relu(channels, vt.out_channels, 3),
                conv_bn_relu(vt.out_channels, vt.out_channels, 3, stride=vt.downsample),
                conv_bn_relu(vt.out_channels, vt.out_channels, 3),
            )
        elif channels != vt.out_channels:
            self.downsample = conv_bn_relu(channels, vt.out_channels, 1)
        else:
            self.downsample = nn.Identity()
        self.out_channels = vt.out_channels

    @torch.no_grad()
    def plan(self, intrinsics: torch.Tensor, T_lidar_cam: torch.Tensor, image_aug: torch.Tensor | None):
        xyz = bev_pool.frustum_points(intrinsics, T_lidar_cam, image_aug, self.image_size, self.feature_size,
                                      self.dbound)
        return bev_pool.BEVPoolPlan.from_geometry(xyz, self.grid)

    def pool(self, plan, depth_probs: torch.Tensor, cam_feats: torch.Tensor) -> torch.Tensor:
        bev = bev_pool.pool_fused(plan, depth_probs, cam_feats)
        return self.downsample(bev)
