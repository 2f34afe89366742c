"""Typed model configuration: dataclasses loaded from (and saved back to) YAML, validated on load.

One ``ModelConfig`` describes everything a checkpoint depends on (sizes, channels, grids, classes) plus
the training and post-processing settings that travel with it. Checkpoints embed ``to_dict()`` so a
config/checkpoint mismatch is detected by comparing the architecture part (:func:`architecture_dict`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bevfusion_ros.classes import ATTRIBUTES, DETECTION_CLASSES, MAP_CLASSES
from bevfusion_ros.errors import UserError

MODALITIES = ("fusion", "lidar", "camera")


@dataclass
class LidarConfig:
    sweeps: int = 10
    voxel_size: list[float] = field(default_factory=lambda: [0.075, 0.075, 0.2])
    max_points_per_voxel: int = 10
    max_voxels_train: int = 120000
    max_voxels_test: int = 160000
    in_channels: int = 5
    base_channels: int = 16
    output_channels: int = 128
    encoder_channels: list = field(default_factory=lambda: [[16, 16, 32], [32, 32, 64], [64, 64, 128], [128, 128]])
    encoder_paddings: list = field(default_factory=lambda: [[0, 0, 1], [0, 0, 1], [0, 0, [1, 1, 0]], [0, 0]])
    block_type: str = "basicblock"


@dataclass
class BackboneConfig:
    """A ResNet-style image backbone (BasicBlocks). ``stage_channels[i]`` at stride 2**(i+2)."""
    stem_channels: int = 64
    stem_kernel: int = 7                     # ResNet's 7x7 stem; 3 for small inputs
    stage_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    stage_blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    out_indices: list[int] = field(default_factory=lambda: [1, 2, 3])


@dataclass
class CameraConfig:
    image_size: list[int] = field(default_factory=lambda: [256, 704])     # H, W fed to the backbone
    source_width: int = 1600                 # resize factors below are for images this wide
    resize_test: float = 0.48
    resize_lim_train: list[float] = field(default_factory=lambda: [0.38, 0.55])
    bot_pct_lim: list[float] = field(default_factory=lambda: [0.0, 0.0])
    rot_lim: list[float] = field(default_factory=lambda: [-5.4, 5.4])
    rand_flip: bool = True
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck_channels: int = 256                 # FPN output channels
    feature_stride: int = 8                  # stride of the feature map given to the depth net


@dataclass
class ViewTransformConfig:
    out_channels: int = 80
    dbound: list[float] = field(default_factory=lambda: [1.0, 60.0, 0.5])
    xbound: list[float] = field(default_factory=lambda: [-54.0, 54.0, 0.3])
    ybound: list[float] = field(default_factory=lambda: [-54.0, 54.0, 0.3])
    zbound: list[float] = field(default_factory=lambda: [-10.0, 10.0, 20.0])
    downsample: int = 2
    lidar_depth: bool = True                 # DepthLSS: projected LiDAR depth is a depth-net input
    depth_channels: list[int] = field(default_factory=lambda: [8, 32, 64])
    depthnet_convs: int = 2                  # 3x3 conv-BN-ReLU layers before the 1x1 depth/feature conv


@dataclass
class DecoderConfig:
    layer_nums: list[int] = field(default_factory=lambda: [5, 5])
    layer_strides: list[int] = field(default_factory=lambda: [1, 2])
    out_channels: list[int] = field(default_factory=lambda: [128, 256])
    upsample_strides: list[int] = field(default_factory=lambda: [1, 2])
    fpn_channels: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class PointVelocityConfig:
    """Velocity measured from the sweeps' points (``model/motion.py``), replacing the head's where it passes
    the checks. Post-processing only: no parameter depends on it."""
    enabled: bool = False
    max_speed: float = 16.0            # m/s: the search window is +-max_speed * Δt
    bin_m: float = 0.2                 # BEV occupancy cell (points splatted bilinearly)
    margin: float = 0.3                # m around the box grown by the search window
    min_points: int = 8                # per sweep, inside the region
    min_score: float = 0.2             # boxes scored below are left to the head (mostly false; ~1 ms per box)
    min_correlation: float = 0.3       # normalized cross-correlation at the peak
    ground_clearance: float = 0.25     # m above the box bottom: ground returns are static and would pull to 0
    sweep_tolerance_s: float = 0.01    # Δt within this of a sweep's value counts as that sweep
    # The middle sweep's registration must agree with the oldest's within abs + rel * |v| (m/s).
    consistency_abs: float = 1.0
    consistency_rel: float = 0.25


@dataclass
class DetectionHeadConfig:
    enabled: bool = True
    shared_channels: int = 64
    head_channels: int = 64                  # per-output 3x3 conv width; 0 = outputs are 1x1 on the shared conv
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    max_objects: int = 500
    score_threshold: float = 0.1
    pre_max_size: int = 1000
    post_max_size: int = 200
    # class-aware circle NMS radii (metres between centres), per detection class (CenterPoint's).
    nms_radius: list[float] = field(default_factory=lambda: [4.0, 12.0, 10.0, 12.0, 12.0,
                                                             0.175, 0.85, 0.85, 0.175, 1.0])
    loss_weights: dict = field(default_factory=lambda: {"heatmap": 1.0, "bbox": 0.25, "attribute": 0.2})
    # Decoding: a box moving at least this fast (m/s) takes its direction of motion as heading. The sin/cos
    # regression cannot tell a nearly symmetric box's front from its back; motion can (vehicles, cyclists
    # and walkers move forwards). Meant for measured velocities (point_velocity). 0 = off.
    heading_from_velocity: float = 0.0
    point_velocity: PointVelocityConfig = field(default_factory=PointVelocityConfig)
    # reg, height, dim (log), rot (sin, cos), vel: per-channel weights of the L1 box loss
    code_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                                              0.2, 0.2])


@dataclass
class MapFusionConfig:
    """Temporal fusion of the map output over a drive's frames (``model/map_fusion.py``): a decaying average
    of each cell's logits, carried by the ego pose. Post-processing only: no parameter depends on it."""
    enabled: bool = False
    time_constant_s: float = 5.0       # a frame's weight falls by 1/e every time_constant_s
    max_gap_s: float = 2.0             # frames further apart start a new history
    max_speed: float = 50.0            # m/s: a faster pose change is a relocalization, not driving


@dataclass
class MapHeadConfig:
    enabled: bool = True
    classes: list[str] = field(default_factory=lambda: list(MAP_CLASSES))
    xbound: list[float] = field(default_factory=lambda: [-50.0, 50.0, 0.5])
    ybound: list[float] = field(default_factory=lambda: [-50.0, 50.0, 0.5])
    hidden_channels: int = 128
    convs: int = 2                           # 3x3 conv-BN-ReLU layers before the 1x1 classifier
    resample_first: bool = True              # BEVFusion: grid_sample the BEV, then classify at map size
    # LiDAR ground raster on the map grid (model/map_raster.py) refining the logits at map resolution; not
    # in BEVFusion: its map grid (0.5 m) is finer than the tiny config's BEV (1.2 m). Needs LiDAR.
    lidar_raster: bool = False
    refine_channels: int = 16                # width of the refinement convs
    refine_dilations: list[int] = field(default_factory=lambda: [2, 4])   # of the 3x3 convs after the first
    # Channels of the refinement's coarse context branch (0 = none): the same input taken down to 1 m and
    # 2 m cells, dilated convs there, brought back up and added after the first refinement conv. Why: far
    # from the sensor the ground rings are metres apart, and filling the map between them needs ~30 m of
    # context that 0.5 m convs only buy with many layers (model/heads.py MapContext).
    refine_context: int = 0
    loss_weight: float = 1.0
    # per-class factors on the focal loss, in ``classes`` order (empty = all 1): the thin, rare classes
    # (stop lines cover ~0.2% of the grid) otherwise barely move the loss
    class_weights: list[float] = field(default_factory=list)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    temporal_fusion: MapFusionConfig = field(default_factory=MapFusionConfig)


@dataclass
class TrainConfig:
    batch_size: int = 4
    epochs: int = 20
    lr: float = 2e-4
    weight_decay: float = 0.01
    grad_clip: float = 35.0
    amp: bool = True
    workers: int = 2
    rot_range: list[float] = field(default_factory=lambda: [-0.3925, 0.3925])
    scale_range: list[float] = field(default_factory=lambda: [0.95, 1.05])
    flip: bool = True
    image_aug: bool = True
    camera_dropout: float = 0.1              # P(all cameras masked) per sample: trains the LiDAR-only fallback
    lidar_dropout: float = 0.05              # P(no points) per sample: keeps camera-only runs meaningful


@dataclass
class ModelConfig:
    name: str = "bevfusion"
    modality: str = "fusion"
    point_cloud_range: list[float] = field(default_factory=lambda: [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0])
    detection_classes: list[str] = field(default_factory=lambda: list(DETECTION_CLASSES))
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTES))
    num_cameras: int = 6
    lidar: LidarConfig = field(default_factory=LidarConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    vtransform: ViewTransformConfig = field(default_factory=ViewTransformConfig)
    fuser_channels: int = 256
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    detection: DetectionHeadConfig = field(default_factory=DetectionHeadConfig)
    map: MapHeadConfig = field(default_factory=MapHeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ derived geometry
    @property
    def use_lidar(self) -> bool:
        return self.modality in ("fusion", "lidar")

    @property
    def use_camera(self) -> bool:
        return self.modality in ("fusion", "camera")

    @property
    def sparse_shape(self) -> tuple[int, int, int]:
        """Voxel grid (X, Y, Z); Z has one extra cell as in BEVFusion ([1440, 1440, 41])."""
        pcr, vs = self.point_cloud_range, self.lidar.voxel_size
        nx = int(round((pcr[3] - pcr[0]) / vs[0]))
        ny = int(round((pcr[4] - pcr[1]) / vs[1]))
        nz = int(round((pcr[5] - pcr[2]) / vs[2])) + 1
        return nx, ny, nz

    @property
    def depth_bins(self) -> int:
        lo, hi, step = self.vtransform.dbound
        return int(math.ceil((hi - lo) / step - 1e-9))   # len(arange(lo, hi, step)), as bev_pool

    @property
    def feature_size(self) -> tuple[int, int]:
        h, w = self.camera.image_size
        return h // self.camera.feature_stride, w // self.camera.feature_stride

    @property
    def camera_pool_size(self) -> tuple[int, int]:
        x0, x1, dx = self.vtransform.xbound
        y0, y1, dy = self.vtransform.ybound
        return int(round((x1 - x0) / dx)), int(round((y1 - y0) / dy))

    @property
    def camera_z_bins(self) -> int:
        z0, z1, dz = self.vtransform.zbound
        return int(round((z1 - z0) / dz))

    @property
    def bev_size(self) -> tuple[int, int]:
        nx, ny = self.camera_pool_size
        return nx // self.vtransform.downsample, ny // self.vtransform.downsample

    @property
    def map_size(self) -> tuple[int, int]:
        x0, x1, dx = self.map.xbound
        y0, y1, dy = self.map.ybound
        return int(round((x1 - x0) / dx)), int(round((y1 - y0) / dy))

    @property
    def bev_cell(self) -> tuple[float, float]:
        """Metres per cell of the fused BEV (and of the detection heatmap)."""
        pcr = self.point_cloud_range
        nx, ny = self.bev_size
        return (pcr[3] - pcr[0]) / nx, (pcr[4] - pcr[1]) / ny

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict, source: str = "<dict>") -> "ModelConfig":
        config = _build(ModelConfig, data, source, "")
        validate(config, source)
        return config

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def architecture_dict(config: ModelConfig | dict) -> dict:
    """The part of a config that decides parameter shapes (everything but training/post-processing)."""
    data = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    out = {k: v for k, v in data.items() if k not in ("train", "name")}
    det = dict(out.get("detection", {}))
    for key in ("score_threshold", "pre_max_size", "post_max_size", "nms_radius", "loss_weights",
                "code_weights", "gaussian_overlap", "min_radius", "max_objects", "heading_from_velocity",
                "point_velocity"):
        det.pop(key, None)
    out["detection"] = det
    mp = dict(out.get("map", {}))
    for key in ("loss_weight", "class_weights", "focal_alpha", "focal_gamma", "temporal_fusion"):
        mp.pop(key, None)
    out["map"] = mp
    cam = dict(out.get("camera", {}))
    for key in ("resize_lim_train", "bot_pct_lim", "rot_lim", "rand_flip"):
        cam.pop(key, None)
    out["camera"] = cam
    lidar = dict(out.get("lidar", {}))
    for key in ("max_voxels_train", "max_voxels_test", "sweeps"):
        lidar.pop(key, None)
    out["lidar"] = lidar
    return out


def load_config(path: str | Path) -> ModelConfig:
    """Load and validate a model YAML; every problem is a :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model config {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"model config {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"model config {path} must be a mapping at top level, got {type(data).__name__}")
    return ModelConfig.from_dict(data, str(path))


def _build(cls, data: Any, source: str, prefix: str):
    if not isinstance(data, dict):
        raise UserError(f"{source}: '{prefix or 'config'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)} "
                        f"(known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, source, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(value, default, source, prefix + name)
    return cls(**kwargs)


def _check_type(value, default, source: str, key: str):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true/false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{source}: {key} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and not float(value).is_integer():
            raise UserError(f"{source}: {key} must be an integer, got {value!r}")
        value = type(default)(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f"{source}: {key} must be a string, got {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise UserError(f"{source}: {key} must be a list, got {value!r}")
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            raise UserError(f"{source}: {key} must be a mapping, got {value!r}")
    return value


def validate(config: ModelConfig, source: str = "<config>") -> None:
    def bad(msg: str) -> None:
        raise UserError(f"{source}: {msg}")

    if config.modality not in MODALITIES:
        bad(f"modality must be one of {MODALITIES}, got {config.modality!r}")
    if len(config.point_cloud_range) != 6:
        bad("point_cloud_range must have 6 numbers [x0, y0, z0, x1, y1, z1]")
    pcr = config.point_cloud_range
    if not all(pcr[i + 3] > pcr[i] for i in range(3)):
        bad(f"point_cloud_range must have max > min on every axis, got {pcr}")
    if len(config.lidar.voxel_size) != 3 or min(config.lidar.voxel_size) <= 0:
        bad(f"lidar.voxel_size must be 3 positive numbers, got {config.lidar.voxel_size}")
    for axis, (lo, hi, vs) in enumerate(zip(pcr[:3], pcr[3:], config.lidar.voxel_size)):
        n = (hi - lo) / vs
        if abs(n - round(n)) > 1e-4:
            bad(f"point_cloud_range axis {axis} ({hi - lo} m) is not a multiple of voxel size {vs}")
    if config.lidar.sweeps < 1:
        bad("lidar.sweeps must be >= 1")
    if len(config.lidar.encoder_channels) != len(config.lidar.encoder_paddings):
        bad("lidar.encoder_channels and lidar.encoder_paddings must have the same number of stages")
    if len(config.camera.image_size) != 2:
        bad("camera.image_size must be [H, W]")
    h, w = config.camera.image_size
    stride = config.camera.feature_stride
    if h % stride or w % stride:
        bad(f"camera.image_size {config.camera.image_size} must be divisible by feature_stride {stride}")
    if stride not in (4, 8, 16, 32):
        bad("camera.feature_stride must be 4, 8, 16 or 32")
    bb = config.camera.backbone
    if len(bb.stage_channels) != len(bb.stage_blocks):
        bad("camera.backbone.stage_channels and stage_blocks must have equal length")
    if not bb.out_indices or max(bb.out_indices) >= len(bb.stage_channels) or min(bb.out_indices) < 0:
        bad(f"camera.backbone.out_indices {bb.out_indices} out of range")
    if 2 ** (min(bb.out_indices) + 2) > stride:
        bad("camera.feature_stride is finer than the finest backbone output used")
    for name in ("dbound", "xbound", "ybound", "zbound"):
        lo, hi, step = getattr(config.vtransform, name)
        if not (hi > lo and step > 0):
            bad(f"vtransform.{name} must be [min, max, step] with max > min, step > 0")
    nx, ny = config.camera_pool_size
    ds = config.vtransform.downsample
    if ds < 1 or nx % ds or ny % ds:
        bad(f"vtransform.downsample {ds} must divide the camera pool grid {nx}x{ny}")
    vt = config.vtransform
    if abs(vt.xbound[0] - pcr[0]) > 1e-6 or abs(vt.xbound[1] - pcr[3]) > 1e-6 \
            or abs(vt.ybound[0] - pcr[1]) > 1e-6 or abs(vt.ybound[1] - pcr[4]) > 1e-6:
        bad("vtransform.xbound/ybound must span point_cloud_range in x and y")
    dec = config.decoder
    if not (len(dec.layer_nums) == len(dec.layer_strides) == len(dec.out_channels)
            == len(dec.upsample_strides) == len(dec.fpn_channels)):
        bad("decoder lists layer_nums/layer_strides/out_channels/upsample_strides/fpn_channels must "
            "have equal length")
    total = 1
    for s, u in zip(dec.layer_strides, dec.upsample_strides):
        total *= s
        if total != u:
            bad("decoder.upsample_strides must undo the cumulative layer_strides (output at BEV size)")
    if list(config.detection_classes) != list(DETECTION_CLASSES):
        bad("detection_classes must be the 10 nuScenes classes in the devkit's order")
    if len(config.detection.nms_radius) != len(config.detection_classes):
        bad("detection.nms_radius needs one radius per detection class")
    if len(config.detection.code_weights) != 10:
        bad("detection.code_weights needs 10 numbers (offset 2, height 1, log-size 3, sin/cos 2, vel 2)")
    unknown = [c for c in config.map.classes if c not in MAP_CLASSES]
    if unknown:
        bad(f"map.classes has unknown class(es) {unknown}; known: {MAP_CLASSES}")
    if config.map.enabled and config.map.lidar_raster and not config.use_lidar:
        bad("map.lidar_raster needs LiDAR (modality fusion or lidar)")
    if config.map.refine_channels < 1:
        bad("map.refine_channels must be >= 1")
    if not all(isinstance(d, int) and d >= 1 for d in config.map.refine_dilations):
        bad("map.refine_dilations must be integers >= 1")
    if config.map.refine_context < 0:
        bad("map.refine_context must be >= 0 (0 = no context branch)")
    weights = config.map.class_weights
    if weights and (len(weights) != len(config.map.classes)
                    or not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights)):
        bad(f"map.class_weights needs one finite number >= 0 per map class ({len(config.map.classes)}), "
            f"got {weights}")
    if not config.detection.enabled and not config.map.enabled:
        bad("at least one of detection.enabled / map.enabled must be true")
    if not math.isfinite(config.detection.heading_from_velocity) or config.detection.heading_from_velocity < 0:
        bad("detection.heading_from_velocity must be a speed >= 0 (m/s; 0 = off)")
    fusion = config.map.temporal_fusion
    if not all(math.isfinite(v) and v > 0 for v in (fusion.time_constant_s, fusion.max_gap_s, fusion.max_speed)):
        bad("map.temporal_fusion: time_constant_s, max_gap_s and max_speed must be finite numbers > 0")
    pv = config.detection.point_velocity
    pv_values = dataclasses.asdict(pv)
    if not all(math.isfinite(v) for k, v in pv_values.items() if k != "enabled"):
        bad("detection.point_velocity values must be finite numbers")
    if pv.max_speed <= 0 or pv.bin_m <= 0 or pv.min_points < 1:
        bad("detection.point_velocity needs max_speed > 0, bin_m > 0 and min_points >= 1")
    if min(pv.margin, pv.sweep_tolerance_s, pv.consistency_abs, pv.consistency_rel) < 0 \
            or not 0 <= pv.min_correlation <= 1:
        bad("detection.point_velocity: margin, sweep_tolerance_s and consistency_* must be >= 0, "
            "min_correlation in [0, 1]")
    if not math.isfinite(config.detection.score_threshold) or not 0 <= config.detection.score_threshold < 1:
        bad("detection.score_threshold must be in [0, 1)")
