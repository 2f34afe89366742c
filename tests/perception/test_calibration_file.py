"""Calibration files the node reads: the rig format the calibration tools write, and the plain layout."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros import geometry as geo
from bevfusion_ros.errors import UserError
from bevfusion_ros.paths import REPO_ROOT
from bevfusion_ros.perception.calibration_file import load_extrinsics


def test_the_shipped_rig_file_gives_base_to_sensor_transforms_for_every_sensor():
    path = REPO_ROOT / "calib" / "nuscenes.yaml"
    if not path.is_file():
        pytest.skip("calib/nuscenes.yaml not shipped yet")
    base, extrinsics = load_extrinsics(path)
    assert base == "base_link" and {"LIDAR_TOP", "CAM_FRONT", "CAM_BACK"} <= set(extrinsics)
    for T in extrinsics.values():
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)


def test_plain_layout_with_matrices_or_quaternions(tmp_path):
    T = geo.make_transform(geo.yaw_to_quat_wxyz(0.3), [1.0, 2.0, 3.0])
    path = tmp_path / "rig.yaml"
    path.write_text("base_frame: base_link\nsensors:\n"
                    f"  CAM_FRONT: {{T_base_sensor: {T.tolist()}}}\n"
                    "  LIDAR_TOP: {translation: [1.0, 2.0, 3.0], rotation: [1.0, 0.0, 0.0, 0.0]}\n")
    base, extrinsics = load_extrinsics(path)
    np.testing.assert_allclose(extrinsics["CAM_FRONT"], T)
    np.testing.assert_allclose(extrinsics["LIDAR_TOP"][:3, 3], [1, 2, 3])


@pytest.mark.parametrize("text", ["[1, 2", "- just a list\n", "sensors: {}\n", "sensors:\n  CAM_FRONT: [1, 2, 3]\n"])
def test_broken_files_are_one_user_error(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError):
        load_extrinsics(path)
