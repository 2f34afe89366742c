"""The real nuScenes keyframe (../shared/data/nuscenes-sample) goes through the conversion functions
(rosbags CDR -> rclpy -> numpy): points, images, camera_info and tf_static come back intact, and its LiDAR
points projected into CAM_FRONT land consistently with its annotated boxes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from rclpy.serialization import deserialize_message

from bevfusion_ros import geometry
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.data import bag_messages as bm
from bevfusion_ros.ros.camera_info import camera_info_to_intrinsics
from bevfusion_ros.ros.image import compressed_image_to_rgb
from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
from bevfusion_ros.ros.tf_buffer import TFBuffer
from bevfusion_ros.ros.types import msg_class, typestore

WIDTH, HEIGHT = 1600, 900


def _through_rclpy(typed):
    """Serialize a rosbags message as the bag writer does and deserialize it as an rclpy subscriber would."""
    type_name, msg = typed
    return deserialize_message(bytes(typestore().serialize_cdr(msg, type_name)), msg_class(type_name))


@pytest.fixture(scope="module")
def sample(nuscenes_sample):
    meta = json.loads((nuscenes_sample / "sample.json").read_text())
    stamp_us = round(meta["timestamp_s"] * 1e6)
    raw = np.fromfile(nuscenes_sample / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    cloud = _through_rclpy(bm.pointcloud_message(raw, stamp_us))
    points, dropped = pointcloud2_to_xyzi(cloud, extra_fields=("ring",))
    static = [bm.transform_stamped("base_link", "LIDAR_TOP", stamp_us, *_pose(meta["lidar"]["lidar2ego"]))]
    for name, cam in meta["cameras"].items():
        static.append(bm.transform_stamped("base_link", name, stamp_us, *_pose(cam["cam2ego"])))
    tf = TFBuffer()
    tf.add_message(_through_rclpy(bm.tf_message(static)), static=True)
    return {"meta": meta, "raw": raw, "points": points, "dropped": dropped, "cloud": cloud, "tf": tf,
            "dir": nuscenes_sample, "stamp_us": stamp_us}


def _pose(matrix):
    T = np.asarray(matrix)
    u, _, vt = np.linalg.svd(T[:3, :3])
    return T[:3, 3], geometry.matrix_to_quat_wxyz(u @ vt)


def test_points_survive_conversion(sample):
    assert sample["dropped"] == 0 and sample["points"].shape == (34688, 5)
    np.testing.assert_array_equal(sample["points"], sample["raw"])
    assert sample["cloud"].header.frame_id == "LIDAR_TOP"
    assert sample["cloud"].header.stamp.sec == int(sample["meta"]["timestamp_s"])


def test_images_and_camera_info_survive_conversion(sample):
    import cv2

    for name in CAMERA_NAMES:
        cam = sample["meta"]["cameras"][name]
        jpeg = (sample["dir"] / cam["file"]).read_bytes()
        rgb = compressed_image_to_rgb(_through_rclpy(bm.compressed_image_message(jpeg, 0, name)))
        assert rgb.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(rgb, cv2.imread(str(sample["dir"] / cam["file"]))[:, :, ::-1])
        info = camera_info_to_intrinsics(_through_rclpy(bm.camera_info_message(np.asarray(cam["cam2img"]), WIDTH,
                                                                                HEIGHT, 0, name)))
        np.testing.assert_array_equal(info.K, np.asarray(cam["cam2img"]))


def test_tf_static_reproduces_the_lidar_to_camera_extrinsics(sample):
    """lidar2cam in sample.json also carries the ego motion between the LiDAR and camera stamps (tens of ms),
    so the static chain agrees with it to within centimetres and a fraction of a degree."""
    for name in CAMERA_NAMES:
        T_cam_lidar = sample["tf"].lookup(name, "LIDAR_TOP")
        reference = np.asarray(sample["meta"]["cameras"][name]["lidar2cam"])
        assert np.linalg.norm(T_cam_lidar[:3, 3] - reference[:3, 3]) < 0.5
        cos_angle = (np.trace(T_cam_lidar[:3, :3].T @ reference[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos_angle, -1, 1))) < 1.0


def _project(sample, camera: str, xyz: np.ndarray):
    T_cam_lidar = sample["tf"].lookup(camera, "LIDAR_TOP")
    K = np.asarray(sample["meta"]["cameras"][camera]["cam2img"])
    points_cam = geometry.transform_points(T_cam_lidar, xyz.astype(np.float64))
    uv, in_front = geometry.project_to_image(points_cam, K, min_depth=1.0)
    inside = in_front & (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT)
    return uv, inside, points_cam


def test_box_point_counts_match_the_annotations(sample):
    instances = [inst for inst in sample["meta"]["instances"] if inst["valid"]]
    boxes = np.array([inst["box"] for inst in instances])
    counts = geometry.points_in_boxes(sample["points"][:, :3], boxes).sum(axis=0)
    expected = np.array([inst["num_lidar_pts"] for inst in instances])
    # nuScenes' num_lidar_pts was counted by its own tooling (box faces, annotation-time rounding): most counts
    # agree exactly, all within 10 % + 2 points
    assert np.all(np.abs(counts - expected) <= 2 + 0.1 * expected) and np.mean(counts == expected) > 0.8


def test_lidar_points_project_into_cam_front_consistently_with_the_boxes(sample):
    points = sample["points"][:, :3]
    uv, inside, _ = _project(sample, "CAM_FRONT", points)
    assert inside.sum() > 2000, "too few LiDAR points land in CAM_FRONT"

    # ground returns ahead of the car (z below the sensor by more than 1.4 m) land below the horizon
    ground = (points[:, 2] < -1.4) & inside
    horizon = np.asarray(sample["meta"]["cameras"]["CAM_FRONT"]["cam2img"])[1, 2]
    assert ground.sum() > 500 and np.mean(uv[ground, 1] > horizon) > 0.97

    instances = [inst for inst in sample["meta"]["instances"] if inst["valid"] and inst["num_lidar_pts"] >= 5]
    boxes = np.array([inst["box"] for inst in instances])
    members = geometry.points_in_boxes(points, boxes)
    checked = 0
    for index, box in enumerate(boxes):
        corners = geometry.box_corners(box[None])[0]
        corner_uv, corner_inside, corners_cam = _project(sample, "CAM_FRONT", corners)
        if not corner_inside.all():
            continue  # the box is not fully in view
        checked += 1
        box_points = members[:, index]
        # every LiDAR point of the box lands in the camera image and inside the box's projected rectangle
        assert inside[box_points].all(), f"{instances[index]['label']} box points fall outside CAM_FRONT"
        lo, hi = corner_uv.min(axis=0) - 2, corner_uv.max(axis=0) + 2
        in_rect = np.all((uv[box_points] >= lo) & (uv[box_points] <= hi), axis=1)
        assert in_rect.all()
    assert checked >= 3, "expected several fully visible boxes with LiDAR support in CAM_FRONT"


def test_boxes_with_lidar_support_project_into_some_camera(sample):
    """With six cameras covering 360 degrees, each box with >= 5 LiDAR points has its centre inside one image."""
    instances = [inst for inst in sample["meta"]["instances"] if inst["valid"] and inst["num_lidar_pts"] >= 5]
    centres = np.array([inst["box"][:3] for inst in instances])
    seen = np.zeros(len(centres), bool)
    for camera in CAMERA_NAMES:
        _, inside, _ = _project(sample, camera, centres)
        seen |= inside
    assert seen.all()
