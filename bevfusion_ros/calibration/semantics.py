"""What SemAlign consumes: LiDAR points with per-point classes and camera images reduced to per-pixel
class maps, plus the intrinsics. Plain dataclasses of numpy arrays (no torch, no ROS).

Class indices are any non-negative integers shared by both sides of a frame (a provider decides the set:
nuScenes lidarseg indices for ground truth, detection classes + ground for box-derived labels, a model's
output classes for ONNX segmentation). ``-1`` means "no label" on either side: such points are not used,
such pixels belong to no class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = -1


@dataclass
class CameraSemantics:
    """One camera of one frame: the per-pixel class map and the pinhole intrinsics of that map."""

    name: str
    labels: np.ndarray            # H x W integer class map (IGNORE = unlabeled)
    intrinsic: np.ndarray         # 3 x 3 K for pixel coordinates of `labels` (pixel centres at integers)
    # Known motion of the LiDAR frame between the LiDAR and this camera's stamps (ego motion, from poses):
    # maps LiDAR-frame points at the LiDAR stamp into the LiDAR frame at the camera stamp. The calibrated
    # T_cam_lidar is then the static extrinsic: p_cam = T_cam_lidar @ lidar_motion @ p.
    lidar_motion: np.ndarray | None = None
    # Optional per-class masks of where a class *may* be although another class is drawn on top (e.g. an
    # object behind a box-derived hull that the LiDAR sees through); a class's image region is
    # ``labels == c`` OR ``extra_masks[c]``.
    extra_masks: dict[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.intrinsic = np.asarray(self.intrinsic, dtype=np.float64)
        if self.lidar_motion is not None:
            self.lidar_motion = np.asarray(self.lidar_motion, dtype=np.float64)
            if self.lidar_motion.shape != (4, 4) or not np.all(np.isfinite(self.lidar_motion)):
                raise ValueError(f"camera {self.name}: lidar_motion must be a finite 4x4 transform")
        if self.labels.ndim != 2 or self.labels.size == 0:
            raise ValueError(f"camera {self.name}: labels must be a non-empty H x W class map, "
                             f"got shape {self.labels.shape}")
        if self.intrinsic.shape != (3, 3) or not np.all(np.isfinite(self.intrinsic)):
            raise ValueError(f"camera {self.name}: intrinsic must be a finite 3x3 matrix")

    def class_mask(self, cls: int) -> np.ndarray:
        """Boolean H x W image region of class ``cls``."""
        mask = self.labels == cls
        if self.extra_masks and cls in self.extra_masks:
            mask = mask | self.extra_masks[cls]
        return mask

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.labels.shape[1]), int(self.labels.shape[0])


@dataclass
class SemanticFrame:
    """One synchronized frame: LiDAR points in the LiDAR frame with classes, and the cameras."""

    points: np.ndarray            # N x >=3 float, LiDAR frame (x forward, y left, z up)
    point_labels: np.ndarray      # N integer classes (IGNORE = unlabeled)
    cameras: dict[str, CameraSemantics] = field(default_factory=dict)
    stamp_us: int = 0

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.point_labels = np.asarray(self.point_labels).astype(np.int64, copy=False)
        if self.points.ndim != 2 or self.points.shape[1] < 3:
            raise ValueError(f"points must be N x >=3, got shape {self.points.shape}")
        if self.point_labels.shape != (self.points.shape[0],):
            raise ValueError(f"point_labels must have one label per point: {self.point_labels.shape} vs "
                             f"{self.points.shape[0]} points")
