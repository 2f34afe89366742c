"""Heads on the decoded BEV: a CenterPoint-style detection head and BEVFusion's map-segmentation head.

Detection (all maps at the BEV size, axis 2 = x, axis 3 = y; see box_coder.py for the encoding):
``heatmap`` [B, 10, X, Y] logits, ``reg`` [B, 2, X, Y] sub-cell offset, ``height`` [B, 1] box-centre z,
``dim`` [B, 3] log(l, w, h), ``rot`` [B, 2] (sin, cos) of yaw, ``vel`` [B, 2] (vx, vy) m/s,
``attr`` [B, 8] attribute logits.
Map segmentation: ``map`` [B, n_map_classes, Xm, Ym] logits on the map grid (BEVFusion resamples the
[-54, 54] BEV onto [-50, 50] at 0.5 m with ``grid_sample``). With ``map.lidar_raster`` the head also takes
the LiDAR ground raster on the map grid (model/map_raster.py) and adds a residual refinement computed at
map resolution from [resampled logits, raster]; its last conv starts at zero, so a head trained without
the raster starts out unchanged. With ``map.refine_context`` a coarse branch (MapContext) adds 1-2 m-cell
context to that refinement; its output conv also starts at zero, so it can be added to a trained head.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bevfusion_ros.model.camera import conv_bn_relu
from bevfusion_ros.model.config import ModelConfig
from bevfusion_ros.model.map_raster import RASTER_CHANNELS

# name -> channels (None = number of classes / attributes); the fixed output order of bev_head.
DETECTION_OUTPUTS: tuple[tuple[str, int | None], ...] = (
    ("heatmap", None), ("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2), ("attr", None))


class CenterHead(nn.Module):
    def __init__(self, in_channels: int, config: ModelConfig):
        super().__init__()
        det = config.detection
        self.shared = conv_bn_relu(in_channels, det.shared_channels, 3)
        self.branches = nn.ModuleDict()
        for name, channels in DETECTION_OUTPUTS:
            if channels is None:
                channels = len(config.detection_classes) if name == "heatmap" else len(config.attributes)
            if det.head_channels > 0:
                final = nn.Conv2d(det.head_channels, channels, 1)
                branch = nn.Sequential(conv_bn_relu(det.shared_channels, det.head_channels, 3), final)
            else:
                final = nn.Conv2d(det.shared_channels, channels, 1)
                branch = nn.Sequential(final)
            if name == "heatmap":
                nn.init.constant_(final.bias, -2.19)
            self.branches[name] = branch

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared(x)
        return {name: branch(x) for name, branch in self.branches.items()}


def resample_grid(in_x: tuple[float, float], in_y: tuple[float, float], out_xbound, out_ybound,
                  device=None) -> torch.Tensor:
    """``grid_sample`` grid [1, Xm, Ym, 2] mapping map-cell centres to normalized BEV coordinates.
    The BEV tensor is [B, C, X, Y]: grid_sample's H axis is x and its W axis is y."""
    x0, x1, dx = out_xbound
    y0, y1, dy = out_ybound
    xs = torch.arange(x0 + dx / 2, x1, dx, dtype=torch.float32, device=device)
    ys = torch.arange(y0 + dy / 2, y1, dy, dtype=torch.float32, device=device)
    nx = (xs - in_x[0]) / (in_x[1] - in_x[0]) * 2 - 1
    ny = (ys - in_y[0]) / (in_y[1] - in_y[0]) * 2 - 1
    gx, gy = torch.meshgrid(nx, ny, indexing="ij")
    return torch.stack([gy, gx], dim=-1)[None]


class MapContext(nn.Module):
    """A small U-Net branch of the map refinement: [logits, raster] at 0.5 m -> two stride-2 convs (1 m,
    2 m cells) -> dilated 3x3 convs at 2 m (receptive field ~40 m) -> up to 1 m, joined with the 1 m
    features -> up to 0.5 m. Its output conv is zero-initialized: added to a trained head, the head's
    outputs do not change until the branch is trained."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__()
        c1, c2 = channels, 2 * channels
        self.down1 = nn.Sequential(nn.Conv2d(in_channels, c1, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(c1), nn.ReLU(inplace=True))
        self.down2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(c2), nn.ReLU(inplace=True))
        self.wide = nn.Sequential(*[m for d in (2, 4) for m in (
            nn.Conv2d(c2, c2, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True))])
        self.join = nn.Sequential(nn.Conv2d(c1 + c2, c1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                                  conv_bn_relu(c1, c1, 3))
        self.out = nn.Conv2d(c1, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.down1(x)
        f2 = self.wide(self.down2(f1))
        up = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.out(self.join(torch.cat([f1, up], 1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class MapSegHead(nn.Module):
    def __init__(self, in_channels: int, config: ModelConfig):
        super().__init__()
        mc = config.map
        pcr = config.point_cloud_range
        self.register_buffer("grid", resample_grid((pcr[0], pcr[3]), (pcr[1], pcr[4]), mc.xbound, mc.ybound),
                             persistent=False)
        self.resample_first = mc.resample_first
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(mc.convs):
            layers.append(conv_bn_relu(cin, mc.hidden_channels, 3))
            cin = mc.hidden_channels
        layers.append(nn.Conv2d(cin, len(mc.classes), 1))
        self.classifier = nn.Sequential(*layers)
        self.refine: nn.Sequential | None = None
        if mc.lidar_raster:
            n, c = len(mc.classes), mc.refine_channels
            final = nn.Conv2d(c, n, 1)
            nn.init.zeros_(final.weight)
            nn.init.zeros_(final.bias)
            # a 3x3 conv, then dilated 3x3 convs (default 2, 4: receptive field 15 cells, 7.5 m -- enough to
            # tell a stop line across a lane from a divider along it), then the zero-initialized 1x1
            layers = [conv_bn_relu(n + len(RASTER_CHANNELS), c, 3)]
            for d in mc.refine_dilations:
                layers += [nn.Conv2d(c, c, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
            self.refine = nn.Sequential(*layers, final)
        self.context: MapContext | None = None
        if mc.lidar_raster and mc.refine_context > 0:
            self.context = MapContext(len(mc.classes) + len(RASTER_CHANNELS), mc.refine_context,
                                      mc.refine_channels)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor, raster: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.classifier(self._resample(x)) if self.resample_first else self._resample(self.classifier(x))
        if self.refine is None:
            return logits
        if raster is None or raster.shape[-2:] != logits.shape[-2:] or raster.shape[1] != len(RASTER_CHANNELS):
            raise ValueError(f"the map head needs the LiDAR raster [B, {len(RASTER_CHANNELS)}, "
                             f"{logits.shape[-2]}, {logits.shape[-1]}], got "
                             f"{None if raster is None else tuple(raster.shape)}")
        x = torch.cat([logits, raster.to(logits.dtype)], 1)
        if self.context is None:
            return logits + self.refine(x)
        # the context joins after the first refinement conv (its ReLU output), before the dilated convs
        return logits + self.refine[1:](self.refine[0](x) + self.context(x))
