"""calib/<rig>.yaml: round trip, atomic write with backup, validation, corrupt files."""
import os

import numpy as np
import pytest
import yaml

from bevfusion_ros.calibration import calib_io
from bevfusion_ros.calibration.calib_io import CalibrationFileError
from bevfusion_ros.paths import REPO_ROOT


def _rig(seed=0):
    rng = np.random.default_rng(seed)
    T_base_lidar = np.eye(4)
    T_base_lidar[:3, :3] = calib_io.rpy_to_matrix(*rng.uniform(-0.1, 0.1, 3))
    T_base_lidar[:3, 3] = [0.9, 0.0, 1.8]
    cams = {}
    for name in ("CAM_FRONT", "CAM_BACK"):
        T = np.eye(4)
        T[:3, :3] = calib_io.rpy_to_matrix(*rng.uniform(-3, 3, 3))
        T[:3, 3] = rng.uniform(-1, 1, 3)
        cams[name] = T
    return T_base_lidar, cams


def test_rpy_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(100):
        rpy = rng.uniform([-np.pi, -1.5, -np.pi], [np.pi, 1.5, np.pi])
        assert np.allclose(calib_io.matrix_to_rpy(calib_io.rpy_to_matrix(*rpy)), rpy, atol=1e-12)


def test_save_and_load_round_trip_and_perception_reader(tmp_path):
    T_base_lidar, cams = _rig()
    path = tmp_path / "rig.yaml"
    calib_io.save_rig_calibration(path, cams, T_base_lidar, rig="rig")
    loaded = calib_io.load_rig_calibration(path)
    assert set(loaded) == set(cams)
    for name, T in cams.items():
        assert np.allclose(loaded[name], T, atol=1e-12)
    data = yaml.safe_load(path.read_text())
    assert {"parent", "child", "x", "y", "z", "roll", "pitch", "yaw"} <= set(data["transforms"][0])
    from bevfusion_ros.perception.calibration_file import load_extrinsics
    base, extrinsics = load_extrinsics(path)
    assert base == "base_link"
    assert np.allclose(extrinsics["CAM_FRONT"], T_base_lidar @ cams["CAM_FRONT"], atol=1e-9)


def test_rewrite_keeps_previous_file_as_backup_and_leaves_no_temp_files(tmp_path):
    T_base_lidar, cams = _rig()
    path = tmp_path / "rig.yaml"
    calib_io.save_rig_calibration(path, cams, T_base_lidar)
    first = path.read_text()
    moved = {"CAM_FRONT": cams["CAM_FRONT"] @ np.diag([1.0, 1.0, 1.0, 1.0])}
    moved["CAM_FRONT"][:3, 3] += 0.1
    calib_io.save_rig_calibration(path, moved)
    assert (tmp_path / "rig.yaml.bak").read_text() == first
    loaded = calib_io.load_rig_calibration(path)
    assert np.allclose(loaded["CAM_FRONT"], moved["CAM_FRONT"]) and np.allclose(loaded["CAM_BACK"], cams["CAM_BACK"])
    assert sorted(os.listdir(tmp_path)) == ["rig.yaml", "rig.yaml.bak"]


def test_invalid_transform_is_refused_and_file_untouched(tmp_path):
    T_base_lidar, cams = _rig()
    path = tmp_path / "rig.yaml"
    calib_io.save_rig_calibration(path, cams, T_base_lidar)
    before = path.read_text()
    bad = cams["CAM_FRONT"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(CalibrationFileError):
        calib_io.save_rig_calibration(path, {"CAM_FRONT": bad})
    scaled = cams["CAM_FRONT"].copy()
    scaled[:3, :3] *= 1.1
    with pytest.raises(CalibrationFileError):
        calib_io.save_rig_calibration(path, {"CAM_FRONT": scaled})
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["rig.yaml"]


@pytest.mark.parametrize("text, message", [
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\ntransforms: [", "not valid YAML"),
    ("- just a list", "mapping"),
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\n", "missing key 'transforms'"),
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\ntransforms:\n"
     "- {parent: base_link, child: L, x: .nan, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n", "finite number"),
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\ntransforms:\n"
     "- {parent: base_link, child: C, x: 0, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n", "no transform for the LiDAR"),
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\ntransforms:\n"
     "- {parent: base_link, child: L, x: 0, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n"
     "- {parent: base_link, child: L, x: 1, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n", "more than one parent"),
    ("rig: x\nbase_frame: base_link\nlidar_frame: L\ntransforms:\n"
     "- {parent: base_link, child: L, x: 0, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n"
     "- {parent: nowhere, child: C, x: 0, y: 0, z: 0, roll: 0, pitch: 0, yaw: 0}\n", "does not connect"),
])
def test_corrupt_files_raise_a_clear_error(tmp_path, text, message):
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationFileError, match=message):
        calib_io.load_rig_calibration(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(CalibrationFileError, match="cannot read"):
        calib_io.load_rig_calibration(tmp_path / "nope.yaml")


def test_shipped_nuscenes_rig_matches_the_real_sample(nuscenes_sample):
    import json
    sample = json.loads((nuscenes_sample / "sample.json").read_text())
    rig = calib_io.load_rig_calibration(REPO_ROOT / "calib" / "nuscenes.yaml")
    T_ego_lidar = np.array(sample["lidar"]["lidar2ego"])
    for name, cam in sample["cameras"].items():
        expected = np.linalg.inv(T_ego_lidar) @ np.array(cam["cam2ego"])
        assert np.allclose(rig[name], expected, atol=1e-6), name
