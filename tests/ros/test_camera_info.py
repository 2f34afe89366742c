"""CameraInfo <-> K: the real CAM_FRONT intrinsics survive rclpy transport; an uncalibrated K is rejected."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevfusion_ros.ros.camera_info import CameraInfoError, camera_info_to_intrinsics, make_camera_info
from tests.ros.helpers import publish_until_received


def test_real_intrinsics_round_trip(node, nuscenes_sample):
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(json.loads((nuscenes_sample / "sample.json").read_text())["cameras"]["CAM_FRONT"]["cam2img"])
    got = publish_until_received(node, make_camera_info(K, 1600, 900, "CAM_FRONT", stamp_us=17), CameraInfo)
    intrinsics = camera_info_to_intrinsics(got)
    np.testing.assert_array_equal(intrinsics.K, K)
    assert (intrinsics.width, intrinsics.height, intrinsics.frame_id) == (1600, 900, "CAM_FRONT")
    np.testing.assert_array_equal(np.asarray(got.p).reshape(3, 4)[:, :3], K)


def test_uncalibrated_camera_info_is_rejected():
    from sensor_msgs.msg import CameraInfo

    with pytest.raises(CameraInfoError, match="no valid K"):
        camera_info_to_intrinsics(CameraInfo(width=1600, height=900))
    with pytest.raises(CameraInfoError, match="image size"):
        camera_info_to_intrinsics(make_camera_info(np.eye(3), 0, 0, "CAM_FRONT"))
