"""BEV decoder: SECOND backbone (strided conv blocks) + SECONDFPN (deconv each level to the BEV size,
concatenate), as BEVFusion's decoder."""
from __future__ import annotations

import torch
from torch import nn

from bevfusion_ros.model.camera import conv_bn_relu
from bevfusion_ros.model.config import DecoderConfig


class SECOND(nn.Module):
    def __init__(self, in_channels: int, out_channels: list[int], layer_nums: list[int], layer_strides: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList()
        cin = in_channels
        for cout, num, stride in zip(out_channels, layer_nums, layer_strides):
            layers = [conv_bn_relu(cin, cout, 3, stride)] + [conv_bn_relu(cout, cout, 3) for _ in range(num)]
            self.blocks.append(nn.Sequential(*layers))
            cin = cout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: list[int], upsample_strides: list[int]):
        super().__init__()
        self.deblocks = nn.ModuleList()
        for cin, cout, stride in zip(in_channels, out_channels, upsample_strides):
            if stride > 1:
                up: nn.Module = nn.ConvTranspose2d(cin, cout, stride, stride, bias=False)
            else:
                up = nn.Conv2d(cin, cout, 1, bias=False)
            self.deblocks.append(nn.Sequential(up, nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([deblock(f) for deblock, f in zip(self.deblocks, feats)], dim=1)


class BEVDecoder(nn.Module):
    def __init__(self, in_channels: int, config: DecoderConfig):
        super().__init__()
        self.backbone = SECOND(in_channels, config.out_channels, config.layer_nums, config.layer_strides)
        self.neck = SECONDFPN(config.out_channels, config.fpn_channels, config.upsample_strides)
        self.out_channels = sum(config.fpn_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(x))
