"""A toy model with the real model's two-part tensor signature (fast to export), for back-end tests."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn


class ToyConfig(SimpleNamespace):
    def to_dict(self):
        return {"name": self.name, "modality": self.modality, "cams": self.num_cameras}


def toy_config(modality="fusion", lidar_depth=True):
    return ToyConfig(name=f"toy-{modality}", modality=modality, num_cameras=2, bev_size=(12, 10),
                     use_camera=modality in ("fusion", "camera"), use_lidar=modality in ("fusion", "lidar"),
                     camera=SimpleNamespace(image_size=(16, 24)), vtransform=SimpleNamespace(lidar_depth=lidar_depth))


class ToyBEVFusion(nn.Module):
    """camera_encoder: conv over images (+ depth) -> softmax depth bins + features at stride 2;
    bev_head: concat -> conv -> (heatmap, reg, map) with a bilinear upsample like the map head."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.camera_channels, self.lidar_channels, self.depth_bins = 6, 5, 4
        cin = 3 + (1 if config.vtransform.lidar_depth else 0)
        self.cam = nn.Sequential(nn.Conv2d(cin, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, self.depth_bins + self.camera_channels, 1))
        fin = (self.camera_channels if config.use_camera else 0) + (self.lidar_channels if config.use_lidar else 0)
        self.fuse = nn.Sequential(nn.Conv2d(fin, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heat, self.reg, self.map = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 2, 1), nn.Conv2d(8, 2, 1)
        self.output_names = ("heatmap", "reg", "map")
        for m in self.modules():   # non-trivial BN statistics, so exported graphs are not near-constant
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)

    def camera_encoder(self, images, lidar_depth=None):
        b, n, _, h, w = images.shape
        x = images.flatten(0, 1)
        if self.config.vtransform.lidar_depth:
            d = lidar_depth.flatten(0, 1) if lidar_depth is not None else x.new_zeros(b * n, 1, h, w)
            x = torch.cat([x, d / 60.0], 1)
        y = self.cam(x)
        depth = y[:, : self.depth_bins].softmax(1)
        feats = y[:, self.depth_bins:]
        return depth.view(b, n, self.depth_bins, h // 2, w // 2), feats.view(b, n, self.camera_channels, h // 2, w // 2)

    def bev_head(self, lidar_bev, camera_bev):
        feats = ([camera_bev] if self.config.use_camera else []) + ([lidar_bev] if self.config.use_lidar else [])
        x = self.fuse(torch.cat(feats, 1))
        seg = nn.functional.interpolate(self.map(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.heat(x).sigmoid(), self.reg(x), seg


@pytest.fixture
def toy_model():
    torch.manual_seed(0)
    return ToyBEVFusion(toy_config()).eval()


def toy_inputs(model, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    h, w = cfg.camera.image_size
    x, y = cfg.bev_size
    return {"images": torch.randn(batch, cfg.num_cameras, 3, h, w, generator=g),
            "lidar_depth": torch.rand(batch, cfg.num_cameras, 1, h, w, generator=g) * 50,
            "lidar_bev": torch.randn(batch, model.lidar_channels, x, y, generator=g).relu(),
            "camera_bev": torch.randn(batch, model.camera_channels, x, y, generator=g).relu()}
