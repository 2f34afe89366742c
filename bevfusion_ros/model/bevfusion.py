"""The BEVFusion network (Liu et al., ICRA 2023) split into exportable dense parts.

Tensor contract (see models/README.md):

- ``camera_encoder(images [B,N,3,H,W], lidar_depth [B,N,1,H,W] | None) -> (depth_probs [B,N,D,h,w],
  cam_feats [B,N,C,h,w])``: image backbone + FPN + LSS depth net. Dense, exportable.
- ``lidar.voxelize`` + ``lidar.encode`` (sparse_conv) and ``vtransform.plan`` / ``vtransform.pool``
  (bev_pool + downsample convs) run in torch in every back-end.
- ``map_raster(points) -> [B, 6, Xm, Ym]`` (only with ``map.lidar_raster``): LiDAR ground statistics on the
  map grid (model/map_raster.py), in torch in every back-end like voxelization.
- ``bev_head(lidar_bev [B,Cl,X,Y], camera_bev [B,Cc,X,Y], map_raster [B,6,Xm,Ym] | None) -> tuple`` of raw
  head tensors in the order ``model.output_names``: ConvFuser + SECOND/SECONDFPN decoder + heads. Dense,
  exportable. A modality the config does not use is ignored (pass ``None``); ``map_raster`` is required
  exactly when ``model.uses_map_raster``.

A camera mask [B, N] (1 = valid) zeroes masked cameras' context features before pooling, so a fusion
model degrades to LiDAR-only at run time (all cameras masked) without a different model.
"""
from __future__ import annotations

import torch
from torch import nn

from bevfusion_ros.model.camera import ImageEncoder
from bevfusion_ros.model.config import ModelConfig
from bevfusion_ros.model.decoder import BEVDecoder
from bevfusion_ros.model.depth import DepthNet
from bevfusion_ros.model.fuser import ConvFuser
from bevfusion_ros.model.heads import DETECTION_OUTPUTS, CenterHead, MapSegHead
from bevfusion_ros.model.lidar import LidarEncoder
from bevfusion_ros.model.map_raster import LidarMapRaster
from bevfusion_ros.model.view_transform import CameraToBEV


class BEVFusion(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        bev_x, bev_y = config.bev_size
        in_channels: list[int] = []
        if config.use_camera:
            self.image_encoder = ImageEncoder(config.camera)
            vt = config.vtransform
            self.depth_net = DepthNet(config.camera.neck_channels, config.depth_bins, vt.out_channels,
                                      config.camera.feature_stride, vt.lidar_depth, vt.depth_channels,
                                      vt.depthnet_convs)
            self.vtransform = CameraToBEV(config)
            self.camera_channels = vt.out_channels
            in_channels.append(vt.out_channels)
        if config.use_lidar:
            self.lidar = LidarEncoder(config)
            if (self.lidar.out_x, self.lidar.out_y) != (bev_x, bev_y):
                raise ValueError(f"{config.name}: LiDAR BEV {self.lidar.out_x}x{self.lidar.out_y} does not match "
                                 f"the camera/fused BEV {bev_x}x{bev_y}; adjust voxel size or encoder stages")
            self.lidar_channels = self.lidar.out_channels
            in_channels.append(self.lidar.out_channels)
        if len(in_channels) == 2:
            self.fuser = ConvFuser(in_channels, config.fuser_channels)
            decoder_in = config.fuser_channels
        else:
            self.fuser = None
            decoder_in = in_channels[0]
        self.decoder = BEVDecoder(decoder_in, config.decoder)
        self.det_head = CenterHead(self.decoder.out_channels, config) if config.detection.enabled else None
        self.map_head = MapSegHead(self.decoder.out_channels, config) if config.map.enabled else None
        self.uses_map_raster = bool(config.map.enabled and config.map.lidar_raster)
        self.map_raster = (LidarMapRaster(config.map.xbound, config.map.ybound, config.point_cloud_range[2::3])
                           if self.uses_map_raster else None)
        names = [name for name, _ in DETECTION_OUTPUTS] if self.det_head is not None else []
        self.output_names: tuple[str, ...] = tuple(names + (["map"] if self.map_head is not None else []))

    # ------------------------------------------------------------------ exportable dense parts
    def camera_encoder(self, images: torch.Tensor, lidar_depth: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = images.shape[:2]
        feats = self.image_encoder(images.flatten(0, 1))
        depth, context = self.depth_net(feats, None if lidar_depth is None else lidar_depth.flatten(0, 1))
        h, w = depth.shape[-2:]
        return depth.view(b, n, -1, h, w), context.view(b, n, -1, h, w)

    def bev_head(self, lidar_bev: torch.Tensor | None, camera_bev: torch.Tensor | None,
                 map_raster: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        x = self.shared_bev(lidar_bev, camera_bev)
        outputs = self.detection_outputs(x)
        if self.map_head is not None:
            outputs.append(self.map_head(x, map_raster))
        return tuple(outputs)

    def shared_bev(self, lidar_bev: torch.Tensor | None, camera_bev: torch.Tensor | None) -> torch.Tensor:
        """Fuser + decoder: the BEV both heads read (``bev_head`` in parts, for running the heads apart)."""
        features = []
        if self.config.use_camera:
            features.append(camera_bev)
        if self.config.use_lidar:
            features.append(lidar_bev)
        x = self.fuser(features) if self.fuser is not None else features[0]
        return self.decoder(x)

    def detection_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The detection head's tensors, in ``output_names`` order (empty without a detection head)."""
        if self.det_head is None:
            return []
        det = self.det_head(x)
        return [det[name] for name, _ in DETECTION_OUTPUTS]

    # ------------------------------------------------------------------ full forward (training / reference)
    def forward(self, inputs: dict) -> dict[str, torch.Tensor]:
        """inputs: ``points`` (list of [Ni, 5]), ``images`` [B,N,3,H,W], ``intrinsics`` [B,N,3,3],
        ``T_lidar_cam`` [B,N,4,4] (LiDAR augmentation folded in), ``image_aug`` [B,N,3,3], ``camera_mask``
        [B,N], optional ``lidar_depth`` [B,N,1,H,W]; the camera-only config needs no points."""
        lidar_bev = camera_bev = map_raster = None
        if self.config.use_lidar:
            lidar_bev = self.lidar(inputs["points"])
        if self.map_raster is not None:
            map_raster = self.map_raster(inputs["points"])
        if self.config.use_camera:
            depth, context = self.camera_encoder(inputs["images"], inputs.get("lidar_depth"))
            mask = inputs.get("camera_mask")
            if mask is not None:
                context = context * mask.to(context.dtype)[:, :, None, None, None]
            plan = self.vtransform.plan(inputs["intrinsics"], inputs["T_lidar_cam"], inputs.get("image_aug"))
            camera_bev = self.vtransform.pool(plan, depth, context)
        return dict(zip(self.output_names, self.bev_head(lidar_bev, camera_bev, map_raster)))


def build_model(config: ModelConfig) -> BEVFusion:
    return BEVFusion(config)


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
