"""Bad input to `bevfusion-ros dataset synth` and to nuscenes_io: one clear line, no traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bevfusion_ros.data import nuscenes_io as io
from bevfusion_ros.errors import UserError


def _synth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bevfusion_ros.cli", "dataset", "synth", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["non_empty", "under_a_file", "too_many_scenes", "unknown_split", "mixed_versions",
                                  "zero_scenes", "odd_camera_rate", "count_mismatch"])
def test_synth_cli_refuses_bad_input_with_one_line(tmp_path, case):
    out = tmp_path / "out"
    args = ["--out", str(out), "--scenes", "1", "--keyframes", "2", "--quiet"]
    if case == "non_empty":
        out.mkdir()
        (out / "something").write_text("x")
    elif case == "under_a_file":
        (tmp_path / "file").write_text("x")
        args[1] = str(tmp_path / "file" / "out")
    elif case == "too_many_scenes":
        args += ["--split", "mini_val"]
        args[3] = "3"
    elif case == "unknown_split":
        args += ["--split", "nope"]
    elif case == "mixed_versions":
        args += ["--split", "train,mini_val"]
        args[3] = "1,1"
    elif case == "zero_scenes":
        args[3] = "0"
    elif case == "odd_camera_rate":
        args += ["--camera-hz", "5"]
    elif case == "count_mismatch":
        args += ["--split", "train,val"]
    result = _synth(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("bevfusion-ros dataset")
    if case not in ("zero_scenes",):   # argparse's own usage line precedes its error line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if case in ("too_many_scenes", "unknown_split", "mixed_versions", "odd_camera_rate", "count_mismatch",
                "under_a_file"):
        assert not (out / "v1.0-mini").exists()


@pytest.fixture()
def broken_copy(tiny_dataset, tmp_path):
    """A copy of the tiny dataset's tables (data files are not needed to load the tables)."""
    root, _ = tiny_dataset
    copy = tmp_path / "copy"
    shutil.copytree(root / "v1.0-mini", copy / "v1.0-mini")
    shutil.copytree(root / "maps", copy / "maps")
    shutil.copytree(root / "lidarseg", copy / "lidarseg")
    return copy


def test_open_nuscenes_refuses_missing_table(broken_copy):
    (broken_copy / "v1.0-mini" / "sample_annotation.json").unlink()
    with pytest.raises(UserError, match="sample_annotation.json is missing"):
        io.open_nuscenes(broken_copy, "v1.0-mini")


def test_open_nuscenes_refuses_corrupt_json(broken_copy):
    (broken_copy / "v1.0-mini" / "scene.json").write_text('[{"token": ')
    with pytest.raises(UserError, match="scene.json is not valid JSON"):
        io.open_nuscenes(broken_copy, "v1.0-mini")


def test_open_nuscenes_refuses_lidarseg_files_not_matching_the_table(broken_copy):
    next((broken_copy / "lidarseg" / "v1.0-mini").iterdir()).unlink()
    with pytest.raises(UserError, match="inconsistent.*label files"):
        io.open_nuscenes(broken_copy, "v1.0-mini")


def test_open_nuscenes_refuses_wrong_path_and_unknown_version(broken_copy, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        io.open_nuscenes(tmp_path / "nowhere")
    with pytest.raises(UserError, match="unknown nuScenes version"):
        io.open_nuscenes(broken_copy, "v2.0-mini")
    with pytest.raises(UserError, match="no table folder"):
        io.open_nuscenes(broken_copy, "v1.0-trainval")
    with pytest.raises(UserError, match="no nuScenes table folder"):
        io.infer_version(tmp_path)


def test_find_scene_and_helpers(tiny_nusc):
    scene = io.find_scene(tiny_nusc, "scene-0103")
    assert scene["nbr_samples"] == 3
    with pytest.raises(UserError, match="unknown scene 'scene-9999'"):
        io.find_scene(tiny_nusc, "scene-9999")
    assert io.eval_set_for(tiny_nusc) == "mini_val"
    token = tiny_nusc.sample[0]["data"]["CAM_FRONT"]
    T_ego_cam, K = io.sensor_calibration(tiny_nusc, token)
    assert T_ego_cam.shape == (4, 4) and K.shape == (3, 3)
    assert np.allclose(T_ego_cam[:3, :3] @ T_ego_cam[:3, :3].T, np.eye(3), atol=1e-9)
    pose = io.ego_pose(tiny_nusc, token)
    assert pose.shape == (4, 4) and pose[2, 3] == 0.0


def test_load_points_refuses_truncated_file(tmp_path):
    path = tmp_path / "bad.pcd.bin"
    np.zeros(5 * 10, np.float32).tofile(path)
    assert io.load_points(path).shape == (10, 5)
    with open(path, "ab") as handle:
        handle.write(b"\0\0\0")
    with pytest.raises(UserError, match="not a multiple of 20"):
        io.load_points(path)
    with pytest.raises(UserError, match="does not exist"):
        io.load_points(tmp_path / "missing.pcd.bin")


def test_lidarseg_table_matches_label_files(tiny_dataset):
    root, _ = tiny_dataset
    records = json.loads((root / "v1.0-mini" / "lidarseg.json").read_text())
    files = list((root / "lidarseg" / "v1.0-mini").iterdir())
    assert len(records) == len(files) == 3
