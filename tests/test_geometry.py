"""Specification of the geometry conventions (ARCHITECTURE.md §4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevfusion_ros import geometry as geo


def random_quat(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def test_quaternion_order_conversions_are_inverse_and_move_w():
    q_wxyz = np.array([0.1, 0.2, 0.3, 0.4])
    q_xyzw = geo.quat_wxyz_to_xyzw(q_wxyz)
    assert q_xyzw.tolist() == [0.2, 0.3, 0.4, 0.1]
    assert np.allclose(geo.quat_xyzw_to_wxyz(q_xyzw), q_wxyz)


def test_matrix_quaternion_round_trip_for_random_rotations():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = random_quat(rng)
        rot = geo.quat_wxyz_to_matrix(q)
        assert np.allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(rot), 1.0)
        assert np.allclose(geo.matrix_to_quat_wxyz(rot), q, atol=1e-9)


def test_yaw_quaternion_rotates_x_axis_by_yaw():
    for yaw in (-3.0, -1.0, 0.0, 0.5, 2.5):
        rot = geo.quat_wxyz_to_matrix(geo.yaw_to_quat_wxyz(yaw))
        assert np.allclose(rot @ [1, 0, 0], [np.cos(yaw), np.sin(yaw), 0])
        assert np.isclose(geo.quat_wxyz_to_yaw(geo.yaw_to_quat_wxyz(yaw)), yaw)


def test_zero_or_nan_quaternion_is_rejected():
    with pytest.raises(ValueError, match="quaternion"):
        geo.quat_wxyz_to_matrix([0, 0, 0, 0])
    with pytest.raises(ValueError, match="quaternion"):
        geo.quat_wxyz_to_matrix([np.nan, 0, 0, 1])


def test_transform_maps_b_into_a_and_inverse_undoes_it():
    rng = np.random.default_rng(1)
    T_a_b = geo.make_transform(random_quat(rng), rng.normal(size=3))
    T_b_c = geo.make_transform(random_quat(rng), rng.normal(size=3))
    pts_c = rng.normal(size=(10, 3))
    pts_a = geo.transform_points(T_a_b @ T_b_c, pts_c)
    assert np.allclose(pts_a, geo.transform_points(T_a_b, geo.transform_points(T_b_c, pts_c)))
    assert np.allclose(geo.invert_transform(T_a_b) @ T_a_b, np.eye(4), atol=1e-12)


def test_transform_points_keeps_extra_columns():
    pts = np.array([[1.0, 2.0, 3.0, 0.7, 0.05]], dtype=np.float32)
    out = geo.transform_points(geo.make_transform(np.eye(3), [1, 0, 0]), pts)
    assert out.dtype == np.float32
    assert np.allclose(out, [[2.0, 2.0, 3.0, 0.7, 0.05]])


def test_nuscenes_box_round_trip_swaps_wlh_and_uses_wxyz():
    box = np.array([1.0, 2.0, 0.5, 4.5, 1.9, 1.6, 0.7, 3.0, -1.0])
    fields = geo.box_to_nuscenes(box)
    assert fields["size"] == [1.9, 4.5, 1.6]  # w, l, h
    assert np.isclose(fields["rotation"][0], np.cos(0.35))  # w first
    back = geo.box_from_nuscenes(fields["translation"], fields["size"], fields["rotation"], fields["velocity"])
    assert np.allclose(back, box)


def test_nan_velocity_from_devkit_becomes_zero():
    box = geo.box_from_nuscenes([0, 0, 0], [1, 2, 1], [1, 0, 0, 0], [np.nan, np.nan])
    assert box[7] == 0 and box[8] == 0


def test_transform_boxes_rotates_heading_and_velocity():
    T = geo.make_transform(geo.yaw_to_quat_wxyz(np.pi / 2), [10, 0, 0])
    boxes = np.array([[1.0, 0, 0, 4, 2, 1.5, 0.0, 1.0, 0.0]])
    out = geo.transform_boxes(T, boxes)
    assert np.allclose(out[0, :3], [10, 1, 0])
    assert np.isclose(out[0, 6], np.pi / 2)
    assert np.allclose(out[0, 7:9], [0, 1])
    assert np.allclose(out[0, 3:6], boxes[0, 3:6])


def test_box_corners_and_points_in_boxes_agree():
    boxes = np.array([[0.0, 0, 0, 4, 2, 2, 0.3, 0, 0]])
    corners = geo.box_corners(boxes)
    assert corners.shape == (1, 8, 3)
    centre_in = geo.points_in_boxes(np.array([[0.0, 0, 0], [5.0, 0, 0]]), boxes)
    assert centre_in[:, 0].tolist() == [True, False]
    shrunk = corners[0] * 0.99  # corners pulled towards the centre (at origin) are inside
    assert geo.points_in_boxes(shrunk, boxes).all()


def test_projection_masks_points_behind_camera():
    K = np.array([[1000.0, 0, 800], [0, 1000, 450], [0, 0, 1]])
    uv, ok = geo.project_to_image(np.array([[0.0, 0, 10], [1.0, 0, -5]]), K)
    assert ok.tolist() == [True, False]
    assert np.allclose(uv[0], [800, 450])


def test_stamp_microsecond_conversion_is_exact_inverse():
    for us in (0, 1, 999_999, 1_532_402_927_647_951):
        assert geo.stamp_to_us(*geo.us_to_stamp(us)) == us
    assert geo.stamp_to_us(1, 1_499) == 1_000_001
    assert geo.stamp_to_us(1, 1_500) == 1_000_002


def test_real_sample_lidar_to_camera_is_static_chain_plus_ego_motion(nuscenes_sample):
    """sample.json's lidar2cam is mmdet3d's: cam2ego^-1 @ (ego motion between the LiDAR and camera stamps)
    @ lidar2ego. Our static chain T_cam_ego @ T_ego_lidar must agree in rotation to a fraction of a degree and
    differ in translation only by the ego's travel in those few tens of milliseconds (< 12 m/s * dt)."""
    sample = json.loads((nuscenes_sample / "sample.json").read_text())
    T_ego_lidar = np.array(sample["lidar"]["lidar2ego"])
    for name, cam in sample["cameras"].items():
        T_cam_lidar = geo.invert_transform(np.array(cam["cam2ego"])) @ T_ego_lidar
        delta = T_cam_lidar @ geo.invert_transform(np.array(cam["lidar2cam"]))
        angle = np.degrees(np.arccos(np.clip((np.trace(delta[:3, :3]) - 1) / 2, -1, 1)))
        dt = abs(cam["timestamp_s"] - sample["timestamp_s"])
        assert angle < 0.5, name
        assert np.linalg.norm(delta[:3, 3]) < 12.0 * dt + 0.02, name
