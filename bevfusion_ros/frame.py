"""The data that travels one way through the stack: sensors -> Frame -> model -> PerceptionResult.

These are plain dataclasses of numpy arrays (no ROS types, no torch), so the perception node, the replay
evaluation, offline evaluation and tests all build and consume the same objects.

Frames: points are in the LiDAR frame of the pivot sweep (nuScenes LIDAR_TOP: x right, y forward, z up; see geometry.py);
``T_lidar_cam`` maps camera-optical-frame points into that LiDAR frame; output boxes are in the LiDAR
frame ([x, y, z, l, w, h, yaw, vx, vy], see geometry.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraInput:
    """One camera's contribution to a frame. ``image is None`` means the camera is masked (missing,
    too old, undecodable): the model still runs, with that camera's features zeroed."""

    name: str
    image: np.ndarray | None          # H x W x 3 uint8, RGB
    intrinsic: np.ndarray             # 3 x 3 K of the image as given (before model resize/crop)
    T_lidar_cam: np.ndarray           # 4 x 4, camera optical frame -> LiDAR frame
    stamp_us: int = 0

    @property
    def masked(self) -> bool:
        return self.image is None


@dataclass
class Frame:
    """One synchronized input: the LiDAR sweep is the pivot; cameras are matched to it."""

    stamp_us: int                     # LiDAR stamp (nuScenes microseconds)
    points: np.ndarray                # N x 5 float32: x, y, z, intensity, dt (s, >= 0, 0 = pivot sweep)
    cameras: list[CameraInput]        # in classes.CAMERA_NAMES order; masked cameras included
    T_ego_lidar: np.ndarray = field(default_factory=lambda: np.eye(4))
    T_global_ego: np.ndarray | None = None
    frame_id: str = "LIDAR_TOP"

    @property
    def masked_cameras(self) -> list[str]:
        return [cam.name for cam in self.cameras if cam.masked]


@dataclass
class Detections:
    """Decoded 3D boxes in the frame's LiDAR frame."""

    boxes: np.ndarray                 # M x 9 float: x, y, z, l, w, h, yaw, vx, vy
    scores: np.ndarray                # M float
    labels: np.ndarray                # M int, index into classes.DETECTION_CLASSES
    attributes: np.ndarray            # M int, index into classes.ATTRIBUTES, -1 = none

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 9), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                          np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class BEVMap:
    """Map-segmentation probabilities on a regular grid in the LiDAR frame.

    ``probs[c, i, j]`` is the probability of map class c in the cell whose centre is
    (x = x_min + (i + 0.5) * resolution, y = y_min + (j + 0.5) * resolution): axis 1 is x, axis 2 is y.
    """

    probs: np.ndarray                 # C x X x Y float32 in [0, 1]
    resolution: float                 # metres per cell
    x_min: float
    y_min: float


@dataclass
class PerceptionResult:
    detections: Detections
    bev_map: BEVMap | None
    timings_ms: dict[str, float] = field(default_factory=dict)
