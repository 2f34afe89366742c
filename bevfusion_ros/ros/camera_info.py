"""sensor_msgs/CameraInfo <-> intrinsics (K 3x3, distortion, image size).

nuScenes images are rectified (``image_rect_compressed``): distortion is empty / zeros and K is the
pinhole ``camera_intrinsic`` of calibrated_sensor. Works on rclpy messages and rosbags' dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CameraInfoError(ValueError):
    """A CameraInfo that does not describe a usable pinhole camera."""


@dataclass
class CameraIntrinsics:
    K: np.ndarray                        # 3 x 3 float64
    width: int
    height: int
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    frame_id: str = ""


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """CameraInfo -> :class:`CameraIntrinsics`. Raises :class:`CameraInfoError` for an uncalibrated
    (all-zero K) or non-finite K, or a zero image size."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] == 0:
        raise CameraInfoError(f"CameraInfo for {msg.header.frame_id!r} has no valid K "
                              f"(fx, fy must be positive): {K.ravel().tolist()}")
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"CameraInfo for {msg.header.frame_id!r} has image size {width}x{height}")
    return CameraIntrinsics(K=K, width=width, height=height, D=np.asarray(msg.d, dtype=np.float64).copy(),
                            distortion_model=str(msg.distortion_model), frame_id=str(msg.header.frame_id))


def intrinsics_fields(K: np.ndarray, D: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """k, d, r, p arrays of a rectified pinhole camera (R = I, P = [K | 0])."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {"k": K.reshape(9), "d": np.zeros(5) if D is None else np.asarray(D, dtype=np.float64),
            "r": np.eye(3).reshape(9), "p": P.reshape(12)}


def make_camera_info(K: np.ndarray, width: int, height: int, frame_id: str, stamp_us: int = 0,
                     D: np.ndarray | None = None, distortion_model: str = "plumb_bob"):
    """An rclpy CameraInfo of a rectified pinhole camera."""
    from sensor_msgs.msg import CameraInfo

    from bevfusion_ros.ros.time import make_header

    arrays = intrinsics_fields(K, D)
    msg = CameraInfo(header=make_header(stamp_us, frame_id), width=int(width), height=int(height),
                     distortion_model=distortion_model)
    msg.k = arrays["k"]
    msg.d = arrays["d"].tolist()
    msg.r = arrays["r"]
    msg.p = arrays["p"]
    return msg
