"""frustum_points: reprojecting every frustum point lands on its feature pixel at its depth bin."""
from __future__ import annotations

import json

import pytest
import torch

from bev_pool import BEVGrid, BEVPoolPlan, frustum_points, nuscenes_image_aug

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


def _random_rig(batch=2, cams=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    focal = 800 + 400 * torch.rand(batch, cams, generator=generator, dtype=torch.float64)
    intrinsics = torch.zeros(batch, cams, 3, 3, dtype=torch.float64)
    intrinsics[..., 0, 0] = focal
    intrinsics[..., 1, 1] = focal * 1.01
    intrinsics[..., 0, 2] = 800
    intrinsics[..., 1, 2] = 450
    intrinsics[..., 2, 2] = 1
    rotation = torch.linalg.qr(torch.randn(batch, cams, 3, 3, generator=generator, dtype=torch.float64))[0]
    pose = torch.eye(4, dtype=torch.float64).repeat(batch, cams, 1, 1)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = torch.randn(batch, cams, 3, generator=generator, dtype=torch.float64)
    return intrinsics, pose


def test_reprojection_recovers_feature_pixels_and_depth_bins():
    intrinsics, pose = _random_rig()
    aug = nuscenes_image_aug().expand(2, 3, 3, 3)
    xyz = frustum_points(intrinsics, pose, aug, image_size=(256, 704), feature_size=(4, 6), depth_bound=(1, 5, 1))
    assert xyz.shape == (2, 3, 4, 4, 6, 3)
    cam = torch.einsum("bnij,bndhwj->bndhwi", torch.linalg.inv(pose)[..., :3, :3], xyz) + \
        torch.linalg.inv(pose)[..., None, None, None, :3, 3]
    assert torch.allclose(cam[..., 2], torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 4, 1, 1)
                          .expand_as(cam[..., 2]))
    pixels = torch.einsum("bnij,bndhwj->bndhwi", aug @ intrinsics, cam)
    pixels = pixels[..., :2] / pixels[..., 2:3]
    xs = torch.linspace(0, 703, 6, dtype=torch.float64)
    ys = torch.linspace(0, 255, 4, dtype=torch.float64)
    assert torch.allclose(pixels[..., 0], xs.expand_as(pixels[..., 0]), atol=1e-6)
    assert torch.allclose(pixels[..., 1], ys[:, None].expand_as(pixels[..., 1]), atol=1e-6)


def test_bevfusion_4x4_image_aug_matches_3x3():
    intrinsics, pose = _random_rig(batch=1, cams=2)
    aug3 = torch.tensor([[0.5, 0.1, -20.0], [-0.1, 0.5, -30.0], [0, 0, 1]], dtype=torch.float64)
    aug4 = torch.eye(4, dtype=torch.float64)
    aug4[:2, :2], aug4[:2, 3] = aug3[:2, :2], aug3[:2, 2]
    first = frustum_points(intrinsics, pose, aug3.expand(1, 2, 3, 3), feature_size=(3, 4), depth_bound=(1, 4, 1))
    second = frustum_points(intrinsics, pose, aug4.expand(1, 2, 4, 4), feature_size=(3, 4), depth_bound=(1, 4, 1))
    torch.testing.assert_close(first, second)


def test_nonfinite_calibration_raises():
    intrinsics, pose = _random_rig()
    pose[0, 1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="T_lidar_cam contains NaN or inf"):
        frustum_points(intrinsics, pose, None)


def test_real_rig_front_camera_looks_forward_and_plan_keeps_most_points(nuscenes_sample):
    sample = json.loads((nuscenes_sample / "sample.json").read_text())
    intrinsics = torch.tensor([[sample["cameras"][name]["cam2img"] for name in CAMERAS]], dtype=torch.float64)
    lidar2cam = torch.tensor([[sample["cameras"][name]["lidar2cam"] for name in CAMERAS]], dtype=torch.float64)
    xyz = frustum_points(intrinsics, torch.linalg.inv(lidar2cam), nuscenes_image_aug().expand(1, 6, 3, 3))
    assert xyz.shape == (1, 6, 118, 32, 88, 3)
    # The raw nuScenes LIDAR_TOP frame (what sample.json's lidar2cam refers to) has x right, y forward:
    # the front camera's image centre at 10 m depth lies ~10 m along +y, the back camera's along -y.
    front, back = xyz[0, 0, 18, 16, 44], xyz[0, 3, 18, 16, 44]
    assert 9.5 < float(front[1]) < 11.5 and abs(float(front[0])) < 1.0
    assert -11.5 < float(back[1]) < -9.5 and abs(float(back[0])) < 1.0
    plan = BEVPoolPlan.from_geometry(xyz, BEVGrid())
    assert 0.7 < plan.num_points / xyz[..., 0].numel() < 0.9
