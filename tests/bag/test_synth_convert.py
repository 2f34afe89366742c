"""A freshly generated synthetic dataset (`bevfusion-ros dataset synth`) converts to a bag whose topics, counts
and contents match the dataset as the devkit reads it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bevfusion_ros.classes import CATEGORY_TO_DETECTION
from bevfusion_ros.cli import main as cli_main
from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
from bevfusion_ros.ros.types import typestore


@pytest.fixture(scope="module")
def synth_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    dataroot = root / "data"
    status = cli_main(["dataset", "synth", "--out", str(dataroot), "--scenes", "1", "--keyframes", "2",
                       "--camera-hz", "2", "--no-semantic", "--quiet", "--seed", "3"])
    assert status == 0
    from bevfusion_ros.data.bag_convert import convert_scene, open_dataset

    nusc = open_dataset(dataroot)
    scene = nusc.scene[0]
    bag = root / "bag"
    stats = convert_scene(dataroot, None, scene["name"], bag, progress=False)
    return nusc, scene, bag, stats


def test_synthetic_scene_converts_with_every_sample_data_record(synth_bag):
    from rosbags.rosbag2 import Reader

    nusc, scene, bag, stats = synth_bag
    samples = {s["token"] for s in nusc.sample if s["scene_token"] == scene["token"]}
    per_channel = Counter(nusc.get("sensor", nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["sensor_token"])
                          ["channel"] for sd in nusc.sample_data if sd["sample_token"] in samples)
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == stats.messages
    assert counts["/LIDAR_TOP"] == per_channel["LIDAR_TOP"] > len(samples)  # sweeps included
    for camera in ("CAM_FRONT", "CAM_BACK_LEFT"):
        assert counts[f"/{camera}/image_rect_compressed"] == counts[f"/{camera}/camera_info"] == per_channel[camera]
    assert counts["/gt/detections"] == counts["/gt/markers"] == len(samples)
    assert counts["/tf_static"] == 1


def test_synthetic_points_images_and_boxes_equal_the_dataset(synth_bag):
    from rosbags.rosbag2 import Reader

    from bevfusion_ros.data.nuscenes_io import load_points

    nusc, scene, bag, _ = synth_bag
    by_stamp = {}
    for sd in nusc.sample_data:
        channel = nusc.get("sensor", nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["sensor_token"])["channel"]
        by_stamp[(channel, sd["timestamp"])] = sd
    store = typestore()
    checked = Counter()
    with Reader(bag) as reader:
        for connection, stamp_ns, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == "/LIDAR_TOP":
                sd = by_stamp[("LIDAR_TOP", stamp_ns // 1000)]
                points, dropped = pointcloud2_to_xyzi(msg, extra_fields=("ring",))
                assert dropped == 0
                np.testing.assert_array_equal(points, load_points(Path(nusc.dataroot) / sd["filename"]))
                checked["lidar"] += 1
            elif connection.topic == "/CAM_FRONT/image_rect_compressed":
                sd = by_stamp[("CAM_FRONT", stamp_ns // 1000)]
                assert bytes(msg.data) == (Path(nusc.dataroot) / sd["filename"]).read_bytes()
                checked["image"] += 1
            elif connection.topic == "/gt/detections":
                sample = next(s for s in nusc.sample if s["timestamp"] == stamp_ns // 1000)
                expected = [CATEGORY_TO_DETECTION[nusc.get("sample_annotation", a)["category_name"]]
                            for a in sample["anns"]
                            if nusc.get("sample_annotation", a)["category_name"] in CATEGORY_TO_DETECTION]
                assert [o.label for o in msg.objects] == expected and len(expected) >= 20
                checked["gt"] += 1
    assert checked["lidar"] > 2 and checked["image"] >= 2 and checked["gt"] == 2
