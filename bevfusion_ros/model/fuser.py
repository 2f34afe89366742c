"""ConvFuser: concatenate the camera and LiDAR BEV maps, 3x3 conv + BN + ReLU (BEVFusion)."""
from __future__ import annotations

import torch
from torch import nn


class ConvFuser(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.in_channels = list(in_channels)
        self.net = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat(inputs, dim=1))
