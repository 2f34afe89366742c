"""Helpers shared by the model tests (imported by name; tests/model is put on sys.path by conftest)."""
from __future__ import annotations

import numpy as np
import torch

from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.frame import CameraInput, Frame
from bevfusion_ros.paths import REPO_ROOT

TINY = REPO_ROOT / "models" / "bevfusion-tiny.yaml"
NUSCENES = REPO_ROOT / "models" / "bevfusion-nuscenes.yaml"


def ring_rig(width: int = 1600, height: int = 900) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Six cameras looking out at 0, -55, 55, 180, 110, -110 degrees (nuScenes order), 1.5 m up."""
    yaws = [0.0, -55.0, 55.0, 180.0, 110.0, -110.0]
    K = np.array([[1260.0, 0, width / 2], [0, 1260.0, height / 2], [0, 0, 1]])
    rig = []
    for name, yaw in zip(CAMERA_NAMES, yaws):
        a = np.deg2rad(yaw)
        forward = np.array([np.cos(a), np.sin(a), 0.0])
        right = np.array([np.sin(a), -np.cos(a), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        T = np.eye(4)
        T[:3, :3] = np.stack([right, down, forward], 1)  # camera optical axes expressed in LiDAR frame
        T[:3, 3] = [0.5 * np.cos(a), 0.5 * np.sin(a), -0.3]
        rig.append((name, K, T))
    return rig


def make_frame(num_points: int = 4000, seed: int = 0, masked: tuple[str, ...] = (), image_hw=(900, 1600)) -> Frame:
    rng = np.random.default_rng(seed)
    pts = np.zeros((num_points, 5), np.float32)
    pts[:, 0:2] = rng.uniform(-40, 40, (num_points, 2))
    pts[:, 2] = rng.uniform(-2, 1, num_points)
    pts[:, 3] = rng.uniform(0, 50, num_points)
    cams = []
    for name, K, T in ring_rig(image_hw[1], image_hw[0]):
        image = None if name in masked else rng.integers(0, 255, (*image_hw, 3), dtype=np.uint8)
        cams.append(CameraInput(name, image, K, T))
    return Frame(stamp_us=1, points=pts, cameras=cams)
