"""Image encoder: a ResNet-style backbone (BasicBlocks, written in plain torch) and an FPN neck.

The backbone's stage i has stride 2**(i+2) (stem /2 + max-pool /2, then /2 per later stage), like a
torchvision ResNet18. The neck merges the ``out_indices`` levels top-down (1x1 lateral convs, bilinear
upsampling, sum) and returns one map at ``feature_stride`` -- the level BEVFusion's DepthLSS uses.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bevfusion_ros.model.config import CameraConfig
from bevfusion_ros.model.maxpool import MaxPool3x3


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride)
        self.conv2 = conv_bn_relu(cout, cout, 3, 1, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn_relu(cin, cout, 1, stride, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    def __init__(self, stem_channels: int, stage_channels: list[int], stage_blocks: list[int],
                 out_indices: list[int], stem_kernel: int = 7):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, stem_channels, stem_kernel, 2), MaxPool3x3(2))
        self.stages = nn.ModuleList()
        cin = stem_channels
        for i, (cout, blocks) in enumerate(zip(stage_channels, stage_blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = cout
        self.out_indices = list(out_indices)
        self.last_stage = max(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            if i > self.last_stage:
                break
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


class FPNNeck(nn.Module):
    """Top-down FPN that returns only the finest requested level (``feature_stride``)."""

    def __init__(self, in_channels: list[int], in_strides: list[int], out_channels: int, out_stride: int):
        super().__init__()
        self.in_strides = list(in_strides)
        self.out_stride = out_stride
        self.laterals = nn.ModuleList(conv_bn_relu(c, out_channels, 1) for c in in_channels)
        self.output = conv_bn_relu(out_channels, out_channels, 3)

    def forward(self, feats: list[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
        merged = None
        for lateral, feat in reversed(list(zip(self.laterals, feats))):
            x = lateral(feat)
            if merged is not None:
                x = x + F.interpolate(merged, size=x.shape[-2:], mode="bilinear", align_corners=False)
            merged = x
        if tuple(merged.shape[-2:]) != tuple(out_hw):
            merged = F.interpolate(merged, size=out_hw, mode="bilinear", align_corners=False)
        return self.output(merged)


class ImageEncoder(nn.Module):
    """images [M, 3, H, W] (normalized) -> features [M, neck_channels, H/stride, W/stride]."""

    def __init__(self, config: CameraConfig):
        super().__init__()
        bb = config.backbone
        self.backbone = ResNetBackbone(bb.stem_channels, bb.stage_channels, bb.stage_blocks, bb.out_indices,
                                       bb.stem_kernel)
        channels = [bb.stage_channels[i] for i in bb.out_indices]
        strides = [2 ** (i + 2) for i in bb.out_indices]
        self.neck = FPNNeck(channels, strides, config.neck_channels, config.feature_stride)
        self.feature_stride = config.feature_stride
        self.out_channels = config.neck_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        feats = self.backbone(images)
        return self.neck(feats, (h // self.feature_stride, w // self.feature_stride))
