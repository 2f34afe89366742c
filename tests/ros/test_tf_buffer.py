"""TFBuffer: chaining through the tree, interpolation (lerp + slerp) between stamps, static vs dynamic,
bounded history, and LookupErrors for unknown frames and extrapolation."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros import geometry
from bevfusion_ros.ros.tf_buffer import ExtrapolationError, TFBuffer, TransformError


def _yaw(angle: float) -> np.ndarray:
    return geometry.yaw_to_quat_wxyz(angle)


def _buffer() -> TFBuffer:
    tf = TFBuffer(tolerance_us=50_000)
    tf.set_transform("base_link", "LIDAR_TOP", 0, [1.0, 0.0, 1.8], _yaw(np.pi / 2), static=True)
    tf.set_transform("base_link", "CAM_FRONT", 0, [1.7, 0.0, 1.5], _yaw(0.0), static=True)
    tf.set_transform("map", "base_link", 1_000_000, [0.0, 0.0, 0.0], _yaw(0.0))
    tf.set_transform("map", "base_link", 2_000_000, [10.0, 0.0, 0.0], _yaw(np.pi / 2))
    return tf


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    T = _buffer().lookup("map", "base_link", 1_250_000)
    np.testing.assert_allclose(T[:3, 3], [2.5, 0.0, 0.0])
    assert np.arctan2(T[1, 0], T[0, 0]) == pytest.approx(np.pi / 8)


def test_chains_static_and_dynamic_links():
    tf = _buffer()
    T_map_lidar = tf.lookup("map", "LIDAR_TOP", 2_000_000)
    expected = geometry.make_transform(_yaw(np.pi / 2), [10, 0, 0]) @ geometry.make_transform(_yaw(np.pi / 2), [1, 0, 1.8])
    np.testing.assert_allclose(T_map_lidar, expected, atol=1e-12)
    # sibling lookup goes through base_link and is time independent
    T_cam_lidar = tf.lookup("CAM_FRONT", "LIDAR_TOP", 1_500_000)
    np.testing.assert_allclose(T_cam_lidar[:3, 3], [-0.7, 0.0, 0.3], atol=1e-12)
    np.testing.assert_allclose(tf.lookup("LIDAR_TOP", "map", 2_000_000), geometry.invert_transform(T_map_lidar),
                               atol=1e-12)
    assert tf.is_static("LIDAR_TOP") and not tf.is_static("base_link")


def test_unknown_and_disconnected_frames_raise_lookup_error():
    tf = _buffer()
    with pytest.raises(LookupError, match="unknown frame 'radar'"):
        tf.lookup("map", "radar", 1_500_000)
    tf.set_transform("odom", "imu", 0, [0, 0, 0], _yaw(0), static=True)
    with pytest.raises(TransformError, match="not connected"):
        tf.lookup("map", "imu")


def test_extrapolation_beyond_tolerance_raises_and_within_holds_nearest():
    tf = _buffer()
    np.testing.assert_allclose(tf.lookup("map", "base_link", 2_040_000)[:3, 3], [10.0, 0.0, 0.0])
    with pytest.raises(ExtrapolationError, match="outside its history"):
        tf.lookup("map", "base_link", 2_060_000)
    with pytest.raises(LookupError):
        tf.lookup("map", "base_link", 900_000)
    np.testing.assert_allclose(tf.lookup("map", "base_link")[:3, 3], [10.0, 0.0, 0.0])  # latest


def test_history_is_bounded():
    tf = TFBuffer(history_us=1_000_000, max_samples=100)
    for index in range(500):
        tf.set_transform("map", "base_link", index * 10_000, [index, 0, 0], _yaw(0))
    oldest, newest = tf.time_range("base_link")
    assert newest == 4_990_000 and oldest >= newest - 1_000_000
    assert len(tf._links["base_link"].stamps) <= 100


def test_ingests_tf_messages(node):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from bevfusion_ros.ros.time import us_to_time

    stamped = TransformStamped(child_frame_id="base_link")
    stamped.header.frame_id = "map"
    stamped.header.stamp = us_to_time(1_532_402_927_647_951)
    stamped.transform.translation.x = 411.3
    stamped.transform.rotation.z, stamped.transform.rotation.w = np.sin(0.25), np.cos(0.25)
    tf = TFBuffer()
    assert tf.add_message(TFMessage(transforms=[stamped])) == 1
    T = tf.lookup("map", "base_link", 1_532_402_927_647_951)
    assert T[0, 3] == pytest.approx(411.3) and np.arctan2(T[1, 0], T[0, 0]) == pytest.approx(0.5)
