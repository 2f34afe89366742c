"""Preprocessing specifications: image normalization and the LiDAR depth maps of DepthLSS."""
from __future__ import annotations

import numpy as np
import torch

from bevfusion_ros.model.config import load_config
from bevfusion_ros.model.preprocess import lidar_depth_maps, normalize_images
from bevfusion_ros.paths import REPO_ROOT


def _config():
    return load_config(REPO_ROOT / "models" / "bevfusion-tiny.yaml")


def test_normalize_images_is_imagenet_normalization_in_chw():
    config = _config()
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    out = normalize_images(images, config)
    mean = np.asarray(config.camera.mean, np.float64)
    std = np.asarray(config.camera.std, np.float64)
    expected = ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    assert out.shape == (2, 3, 5, 7) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def _reference_depth(points, K, T_lidar_cam, aug, hw):
    """One point at a time: project, keep the nearest point per pixel."""
    n = len(K)
    h, w = hw
    out = np.zeros((n, 1, h, w))
    for c in range(n):
        T_cam_lidar = np.linalg.inv(T_lidar_cam[c])
        for p in points:
            cam = T_cam_lidar[:3, :3] @ p[:3] + T_cam_lidar[:3, 3]
            if cam[2] <= 0.1:
                continue
            uvw = aug[c] @ K[c] @ cam
            u, v = int(np.floor(uvw[0] / cam[2])), int(np.floor(uvw[1] / cam[2]))
            if 0 <= u < w and 0 <= v < h and (out[c, 0, v, u] == 0 or cam[2] < out[c, 0, v, u]):
                out[c, 0, v, u] = cam[2]
    return out


def test_lidar_depth_maps_keep_the_nearest_visible_point_per_pixel_of_every_camera():
    rng = np.random.default_rng(1)
    hw = (12, 16)
    K = np.array([[[8.0, 0, 8.3], [0, 8.0, 6.1], [0, 0, 1]]] * 2)
    T = np.zeros((2, 4, 4))
    for c, yaw in enumerate((0.0, np.pi / 2)):  # camera 1 turned 90 degrees about the LiDAR z axis
        optical = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float).T  # camera z along LiDAR +x
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        T[c, :3, :3] = rz @ optical
        T[c, :3, 3] = [0.2 * c, -0.1, 0.3]
        T[c, 3, 3] = 1.0
    aug = np.array([np.eye(3), [[0.9, 0, -1.0], [0, 0.9, 0.5], [0, 0, 1]]])
    points = np.concatenate([rng.uniform(-20, 20, (400, 3)), rng.uniform(0, 1, (400, 2))], 1)
    points[:5, :3] = [[5, 0, 0], [6, 0, 0], [0, 5, 0], [-5, 0, 0], [0.05, 0, 0]]  # stacked, behind, too near
    got = lidar_depth_maps(torch.from_numpy(points).float(), torch.from_numpy(K), torch.from_numpy(T),
                           torch.from_numpy(aug), hw)
    expected = _reference_depth(points, K, T, aug, hw)
    assert got.shape == (2, 1) + hw
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    assert (expected > 0).sum() > 20  # the scene actually lands points in both images


def test_lidar_depth_maps_of_an_empty_cloud_are_zero():
    K = torch.eye(3)[None].double()
    got = lidar_depth_maps(torch.zeros(0, 5), K, torch.eye(4)[None].double(), torch.eye(3)[None].double(), (4, 6))
    assert got.shape == (1, 1, 4, 6) and not got.any()
