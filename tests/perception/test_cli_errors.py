"""The product's entry points refuse bad input with one clear line and exit status 2, never a traceback."""
from __future__ import annotations

import pytest

from bevfusion_ros.cli import main


@pytest.mark.parametrize("argv,message", [
    (["replay-eval", "--dataroot", "/nonexistent", "--version", "v1.0-mini"], "not a directory"),
    (["replay-eval", "--dataroot", ".", "--version", "v1.0-mini", "--rate", "0"], "--rate must be positive"),
    (["replay-eval", "--dataroot", ".", "--version", "v1.0-mini", "--set", "sweeps"], "PARAM=VALUE"),
    (["launch", "perception", "--arg", "lidar=/x", "--dry-run"], "unknown launch argument"),
    (["launch", "perception", "--params", "/nonexistent.yaml", "--dry-run"], "does not exist"),
    (["launch", "perception", "--arg", "novalue", "--dry-run"], "NAME:=VALUE"),
])
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_replay_eval_of_an_unknown_scene_is_a_user_error(tmp_path, capsys):
    from tests.bag.tiny_dataset import build_tiny_dataset

    truth = build_tiny_dataset(tmp_path / "data", None, n_keyframes=2)
    assert main(["replay-eval", "--dataroot", truth["dataroot"], "--version", truth["version"],
                 "--scenes", "scene-9999", "--out", str(tmp_path / "out")]) == 2
    assert "scene-9999" in capsys.readouterr().err


def test_perception_node_with_a_bad_parameter_stops_with_one_clear_line(tmp_path):
    import subprocess
    import sys

    params = tmp_path / "bad.yaml"
    params.write_text("/**:\n  ros__parameters:\n    backend: tensorflow\n    sweeps: -1\n"
                      "    gil_switch_interval: 0.5\n")
    proc = subprocess.run([sys.executable, "-m", "bevfusion_ros.nodes.perception", "--ros-args",
                           "--params-file", str(params)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "backend must be one of" in proc.stderr and "sweeps must be >= 0" in proc.stderr
    assert "gil_switch_interval must be in [0, 0.1] s" in proc.stderr
    assert "Traceback" not in proc.stderr
