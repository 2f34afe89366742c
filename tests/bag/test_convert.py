"""`bevfusion-ros convert`: the bag read back with rosbags has the ARCHITECTURE.md topics, the right counts and
decodable messages whose content equals the dataset's; bad input gives one clear line and exit status 2."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bevfusion_ros import geometry
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.cli import main as cli_main
from bevfusion_ros.data.bag_convert import convert_scene
from bevfusion_ros.ros.camera_info import camera_info_to_intrinsics
from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
from bevfusion_ros.ros.tf_buffer import TFBuffer
from bevfusion_ros.ros.types import typestore


def _read(bag: Path):
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(bag) as reader:
        for connection, stamp_ns, data in reader.messages():
            yield connection, stamp_ns, store.deserialize_cdr(data, connection.msgtype)


def _expected_counts(truth: dict) -> dict[str, int]:
    channels = Counter(record["channel"] for record in truth["records"].values())
    counts = {"/LIDAR_TOP": channels["LIDAR_TOP"], "/tf_static": 1,
              "/tf": len({record["stamp"] for record in truth["records"].values()}),
              "/gt/detections": len(truth["keyframes"]), "/gt/markers": len(truth["keyframes"])}
    for camera in CAMERA_NAMES:
        counts[f"/{camera}/image_rect_compressed"] = channels[camera]
        counts[f"/{camera}/camera_info"] = channels[camera]
    return counts


def test_bag_has_the_architecture_topics_with_the_right_types_and_counts(tiny_bag, tiny_dataset):
    from rosbags.rosbag2 import Reader

    bag, stats = tiny_bag
    expected = _expected_counts(tiny_dataset)
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
        assert reader.message_count == sum(expected.values())
    assert counts == expected == stats.messages
    assert types["/LIDAR_TOP"] == "sensor_msgs/msg/PointCloud2"
    assert types["/CAM_FRONT/image_rect_compressed"] == "sensor_msgs/msg/CompressedImage"
    assert types["/CAM_BACK/camera_info"] == "sensor_msgs/msg/CameraInfo"
    assert types["/tf"] == types["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert types["/gt/detections"] == "bevfusion_msgs/msg/DetectedObjects3D"
    assert types["/gt/markers"] == "visualization_msgs/msg/MarkerArray"


def test_sensor_messages_equal_the_dataset(tiny_bag, tiny_dataset):
    bag, _ = tiny_bag
    records = {(r["channel"], r["stamp"]): r for r in tiny_dataset["records"].values()}
    seen = 0
    last_stamp = 0
    for connection, stamp_ns, msg in _read(bag):
        assert stamp_ns >= last_stamp
        last_stamp = stamp_ns
        if connection.topic == "/LIDAR_TOP":
            stamp_us = geometry.stamp_to_us(msg.header.stamp.sec, msg.header.stamp.nanosec)
            assert stamp_ns == stamp_us * 1000 and msg.header.frame_id == "LIDAR_TOP"
            expected = records[("LIDAR_TOP", stamp_us)]["payload"]
            points, dropped = pointcloud2_to_xyzi(msg, extra_fields=("ring",))
            assert dropped == 0
            np.testing.assert_array_equal(points, expected[:, :5])
            seen += 1
        elif connection.topic.endswith("/image_rect_compressed"):
            camera = connection.topic.split("/")[1]
            stamp_us = geometry.stamp_to_us(msg.header.stamp.sec, msg.header.stamp.nanosec)
            assert msg.header.frame_id == camera and msg.format == "jpeg"
            assert bytes(msg.data) == records[(camera, stamp_us)]["payload"]
            seen += 1
        elif connection.topic.endswith("/camera_info"):
            intrinsics = camera_info_to_intrinsics(msg)
            assert (intrinsics.width, intrinsics.height) == (1600, 900) and intrinsics.K[0, 0] > 500
    assert seen == len(records)


def test_tf_messages_reproduce_the_rig_and_ego_poses(tiny_bag, tiny_dataset):
    from nuscenes.nuscenes import NuScenes

    bag, _ = tiny_bag
    tf = TFBuffer()
    for connection, _stamp, msg in _read(bag):
        if connection.topic in ("/tf", "/tf_static"):
            tf.add_message(msg, static=connection.topic == "/tf_static")
    assert {"map", "base_link", "LIDAR_TOP", *CAMERA_NAMES} == tf.frames()
    nusc = NuScenes(tiny_dataset["version"], tiny_dataset["dataroot"], verbose=False)
    for record in nusc.sample_data:
        ego = nusc.get("ego_pose", record["ego_pose_token"])
        calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        channel = nusc.get("sensor", calib["sensor_token"])["channel"]
        expected = (geometry.make_transform(ego["rotation"], ego["translation"])
                    @ geometry.make_transform(calib["rotation"], calib["translation"]))
        np.testing.assert_allclose(tf.lookup("map", channel, record["timestamp"]), expected, atol=1e-9)


def test_ground_truth_boxes_are_in_the_lidar_frame_at_keyframes(tiny_bag, tiny_dataset):
    bag, _ = tiny_bag
    detections = [(stamp, msg) for c, stamp, msg in _read(bag) if c.topic == "/gt/detections"]
    markers = [msg for c, _stamp, msg in _read(bag) if c.topic == "/gt/markers"]
    assert len(detections) == len(tiny_dataset["keyframes"])
    for (stamp_ns, msg), keyframe, marker_array in zip(detections, tiny_dataset["keyframes"], markers):
        assert stamp_ns == keyframe["stamp"] * 1000 and msg.header.frame_id == "LIDAR_TOP"
        assert [obj.label for obj in msg.objects] == keyframe["labels"]
        got = np.array([[o.pose.position.x, o.pose.position.y, o.pose.position.z, o.size.x, o.size.y, o.size.z,
                         geometry.quat_wxyz_to_yaw([o.pose.orientation.w, o.pose.orientation.x,
                                                    o.pose.orientation.y, o.pose.orientation.z]),
                         o.velocity.x, o.velocity.y] for o in msg.objects])
        expected = keyframe["boxes"]
        np.testing.assert_allclose(got[:, :6], expected[:, :6], atol=1e-4)
        np.testing.assert_allclose(geometry.wrap_angle(got[:, 6] - expected[:, 6]), 0.0, atol=1e-4)
        np.testing.assert_allclose(got[:, 7:9], 0.0, atol=1e-6)
        assert marker_array.markers[0].action == 3  # DELETEALL first
        assert len(marker_array.markers) == 1 + len(msg.objects)
        assert all(len(m.points) == 24 for m in marker_array.markers[1:])


def test_sqlite3_storage_and_keyframes_only(tiny_dataset, tmp_path):
    from rosbags.rosbag2 import Reader

    stats = convert_scene(tiny_dataset["dataroot"], tiny_dataset["version"], tiny_dataset["scene"],
                          tmp_path / "bag", storage="sqlite3", keyframes_only=True, progress=False)
    assert stats.messages["/LIDAR_TOP"] == len(tiny_dataset["keyframes"])
    with Reader(tmp_path / "bag") as reader:
        assert {c.topic: c.msgcount for c in reader.connections}["/LIDAR_TOP"] == len(tiny_dataset["keyframes"])
        assert list((tmp_path / "bag").glob("*.db3"))


def _cli(capsys, *args) -> tuple[int, str]:
    status = cli_main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.err


@pytest.fixture
def broken_copy(tiny_dataset, tmp_path):
    return Path(shutil.copytree(tiny_dataset["dataroot"], tmp_path / "dataset"))


def _assert_one_line_error(status: int, err: str, needle: str):
    assert status == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_wrong_path_is_refused(capsys, tmp_path):
    status, err = _cli(capsys, "--dataroot", tmp_path / "nope", "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "not a directory")
    status, err = _cli(capsys, "--dataroot", tmp_path, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "no table folder")
    (tmp_path / "v1.0-mini").mkdir()
    status, err = _cli(capsys, "--dataroot", tmp_path, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "is missing")


def test_unknown_scene_is_refused(capsys, tiny_dataset, tmp_path):
    status, err = _cli(capsys, "--dataroot", tiny_dataset["dataroot"], "--version", "v1.0-mini", "--scene",
                       "scene-9999", "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "unknown scene 'scene-9999'")
    assert "scene-0061" in err and not (tmp_path / "bag").exists()


def test_existing_output_is_refused(capsys, tiny_dataset, tmp_path):
    (tmp_path / "bag").mkdir()
    status, err = _cli(capsys, "--dataroot", tiny_dataset["dataroot"], "--version", "v1.0-mini", "--scene",
                       "scene-0061", "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "already exists")


def test_missing_and_corrupt_tables_are_refused(capsys, broken_copy, tmp_path):
    (broken_copy / "v1.0-mini" / "ego_pose.json").unlink()
    status, err = _cli(capsys, "--dataroot", broken_copy, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag1", "--quiet")
    _assert_one_line_error(status, err, "ego_pose.json is missing")
    (broken_copy / "v1.0-mini" / "ego_pose.json").write_text('[{"token": ')
    status, err = _cli(capsys, "--dataroot", broken_copy, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag2", "--quiet")
    _assert_one_line_error(status, err, "not valid JSON")


def test_corrupt_and_missing_sensor_files_are_refused_and_leave_no_bag(capsys, broken_copy, tmp_path):
    lidar = sorted((broken_copy / "sweeps" / "LIDAR_TOP").glob("*.pcd.bin"))[0]
    lidar.write_bytes(lidar.read_bytes()[:-3])
    status, err = _cli(capsys, "--dataroot", broken_copy, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "is corrupt")
    assert not (tmp_path / "bag").exists()
    lidar.unlink()
    status, err = _cli(capsys, "--dataroot", broken_copy, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "does not exist")
    jpeg = sorted((broken_copy / "samples" / "CAM_FRONT").glob("*.jpg"))[0]
    lidar.write_bytes(np.zeros((10, 5), np.float32).tobytes())
    jpeg.write_bytes(b"not a jpeg at all")
    status, err = _cli(capsys, "--dataroot", broken_copy, "--version", "v1.0-mini", "--scene", "scene-0061",
                       "--out", tmp_path / "bag", "--quiet")
    _assert_one_line_error(status, err, "not a JPEG")
    assert not (tmp_path / "bag").exists()


def test_cli_prints_per_topic_counts(capsys, tiny_dataset, tmp_path):
    status = cli_main(["convert", "--dataroot", tiny_dataset["dataroot"], "--version", "v1.0-mini", "--scene",
                       "scene-0061", "--out", str(tmp_path / "bag"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0 and "/LIDAR_TOP" in out and "/tf_static" in out
    assert json.loads((Path(tiny_dataset["dataroot"]) / "v1.0-mini" / "scene.json").read_text())[0]["name"] in out
