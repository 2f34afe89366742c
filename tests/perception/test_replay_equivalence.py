"""The node's Frames from a bag equal the dataset's Frames (data/dataset.frame_from_sample) of the same
keyframes: same multi-sweep motion compensation and Δt channel, same images, same K, same T_lidar_cam.

The bag's messages are fed, in bag order, through the node's own ingestion (ros/ingest.py) into the
assembler; no model is involved, so this pins the input side of "replay metrics == offline metrics"."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.paths import nuscenes_sample_dir
from bevfusion_ros.perception.assembler import AssemblerConfig, FrameAssembler
from bevfusion_ros.ros.ingest import LockedTransforms, MessageIngest
from tests.bag.tiny_dataset import build_tiny_dataset

SWEEPS = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bevfusion_ros.data.bag_convert import convert_scene

    sample = nuscenes_sample_dir()
    root = tmp_path_factory.mktemp("tiny_nuscenes_perception")
    truth = build_tiny_dataset(root, sample if (sample / "sample.json").is_file() else None, n_keyframes=4)
    bag = tmp_path_factory.mktemp("bags_perception") / "tiny"
    convert_scene(truth["dataroot"], truth["version"], truth["scene"], bag, progress=False)
    return truth, bag


def replay_frames(bag, camera_ego_motion: bool) -> dict:
    """Feed the bag through the node's ingestion; assemble a Frame at every LiDAR message."""
    from bevfusion_ros.nodes.player import open_bag
    from bevfusion_ros.ros.types import typestore

    transforms = LockedTransforms()
    assembler = FrameAssembler(AssemblerConfig(sweeps=SWEEPS, camera_ego_motion=camera_ego_motion,
                                               input_wait_s=0.0), transforms)
    ingest = MessageIngest(assembler, transforms)
    store = typestore()
    frames = {}
    reader = open_bag(bag)
    try:
        for connection, _t, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            topic = connection.topic
            if topic in ("/tf", "/tf_static"):
                ingest.tf(msg, topic == "/tf_static")
            elif topic == "/LIDAR_TOP":
                sweep, _ = ingest.lidar(msg)
                frame, _ = assembler.assemble(sweep)
                frames[frame.stamp_us] = frame
            elif topic.endswith("/camera_info"):
                ingest.camera_info(topic.split("/")[1], msg)
            elif topic.endswith("/image_rect_compressed"):
                ingest.image(topic.split("/")[1], msg)
    finally:
        reader.close()
    return frames


@pytest.mark.parametrize("camera_ego_motion", [True, False])
def test_replayed_frames_equal_dataset_frames(tiny, camera_ego_motion):
    from bevfusion_ros.data.dataset import frame_from_sample
    from bevfusion_ros.data.nuscenes_io import open_nuscenes

    truth, bag = tiny
    nusc = open_nuscenes(truth["dataroot"], truth["version"])
    frames = replay_frames(bag, camera_ego_motion)
    assert len(nusc.sample) == 4
    for sample in nusc.sample:
        expected = frame_from_sample(nusc, sample["token"], sweeps=SWEEPS)
        got = frames[expected.stamp_us]
        assert got.frame_id == expected.frame_id
        np.testing.assert_allclose(got.points, expected.points, atol=1e-4)
        np.testing.assert_allclose(got.T_ego_lidar, expected.T_ego_lidar, atol=1e-6)
        np.testing.assert_allclose(got.T_global_ego, expected.T_global_ego, atol=1e-6)
        assert [c.name for c in got.cameras] == list(CAMERA_NAMES)
        for cam_got, cam_exp in zip(got.cameras, expected.cameras):
            assert not cam_got.masked, cam_got.name
            np.testing.assert_array_equal(cam_got.image, cam_exp.image)
            np.testing.assert_allclose(cam_got.intrinsic, cam_exp.intrinsic)
            if camera_ego_motion:
                np.testing.assert_allclose(cam_got.T_lidar_cam, cam_exp.T_lidar_cam, atol=1e-6)
            else:   # static chain: differs from the dataset's by the ego's travel between the two stamps
                delta = geo.invert_transform(cam_exp.T_lidar_cam) @ cam_got.T_lidar_cam
                dt = abs(cam_exp.stamp_us - expected.stamp_us) * 1e-6
                assert np.linalg.norm(delta[:3, 3]) <= 2.1 * dt + 1e-6


def test_sweeps_between_keyframes_have_no_camera_within_the_delay(tiny):
    _, bag = tiny
    frames = replay_frames(bag, False)
    between = [f for f in frames.values() if all(c.masked for c in f.cameras)]
    assert len(between) == 3            # one LiDAR-only sweep between consecutive keyframes
