"""`bevfusion-ros eval` end to end on a hand-built nuScenes-format dataset (images, LiDAR, map)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevfusion_ros.cli import main as cli_main
from bevfusion_ros.errors import UserError
from bevfusion_ros.eval import offline
from bevfusion_ros.eval.detection import lidar_to_global
from bevfusion_ros.frame import BEVMap, Detections, PerceptionResult
from bevfusion_ros.geometry import points_in_boxes
from bevfusion_ros.paths import REPO_ROOT

TINY = REPO_ROOT / "models" / "bevfusion-tiny.yaml"
REQUIRED = ("map", "nds", "per_class_ap", "mapseg_iou", "mapseg_miou", "tp_errors", "per_class_tp_errors")


def test_frames_match_gt(sensor_nusc_db):
    """The stand-alone frame loader puts every object's LiDAR points inside its GT box (LiDAR frame)."""
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.eval.frames import frame_from_sample, gt_boxes_lidar
    nusc = open_nuscenes(sensor_nusc_db["dataroot"])
    sample = sensor_nusc_db["samples"][1]
    frame = frame_from_sample(nusc, sample["token"], sweeps=1)
    assert frame.points.shape[1] == 5 and frame.points.dtype == np.float32 and np.all(frame.points[:, 4] == 0)
    assert [c.name for c in frame.cameras][0] == "CAM_FRONT" and all(c.image is not None for c in frame.cameras)
    assert frame.cameras[0].image.shape == (225, 400, 3)
    boxes, labels, _, _ = gt_boxes_lidar(nusc, sample["token"], lidar_to_global(frame.T_global_ego, frame.T_ego_lidar))
    np.testing.assert_allclose(boxes[:, :6], sample["boxes"][:, :6], atol=1e-6)
    np.testing.assert_allclose(boxes[:, 6], sample["boxes"][:, 6], atol=2e-3)   # yaw-only boxes, tilted LiDAR
    inside = points_in_boxes(frame.points, boxes).sum(axis=0)
    assert np.all(inside >= 40)
    # CAM_FRONT looks along LiDAR -y rotated by the mount: its optical axis is ego +x
    T_ego_cam = frame.T_ego_lidar @ frame.cameras[0].T_lidar_cam
    np.testing.assert_allclose(T_ego_cam[:3, 2], [1, 0, 0], atol=1e-6)


class _GTPipeline:
    """Stands in for PerceptionPipeline: returns the GT boxes and the GT map of each frame."""

    db = None

    def __init__(self, config_path, checkpoint_path, backend="torch", device="cpu", score_threshold=None, **_):
        from bevfusion_ros.model.config import load_config
        self.config = load_config(config_path)
        self.backend_name = backend

    def infer(self, frame):
        from bevfusion_ros.data.nuscenes_io import open_nuscenes
        from bevfusion_ros.eval.map_gt import sample_map_gt
        if not hasattr(self, "nusc"):
            self.nusc = open_nuscenes(self.db["dataroot"])
        nusc = self.nusc
        sample = next(s for s in nusc.sample if s["timestamp"] == frame.stamp_us)
        gt = next(s for s in self.db["samples"] if s["token"] == sample["token"])
        n = len(gt["labels"])
        mc = self.config.map
        T = lidar_to_global(frame.T_global_ego, frame.T_ego_lidar)
        probs = sample_map_gt(nusc, sample["token"], mc.xbound, mc.ybound, T_global_lidar=T).astype(np.float32)
        dets = Detections(gt["boxes"], np.linspace(0.9, 0.5, n), gt["labels"], gt["attributes"])
        return PerceptionResult(dets, BEVMap(probs, mc.xbound[2], mc.xbound[0], mc.ybound[0]), {"total": 1.0})


def test_offline_eval_scores_gt_as_perfect(sensor_nusc_db, monkeypatch, tmp_path):
    import bevfusion_ros.runtime.pipeline as pipeline_module
    _GTPipeline.db = sensor_nusc_db
    monkeypatch.setattr(pipeline_module, "PerceptionPipeline", _GTPipeline)
    ckpt = tmp_path / "dummy.pt"
    ckpt.write_bytes(b"")
    result = offline.evaluate(TINY, ckpt, sensor_nusc_db["dataroot"], tmp_path / "out", quiet=True, log=lambda *_: None)
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert all(k in data for k in REQUIRED)
    assert data["eval_set"] == "mini_val" and data["num_samples"] == 3 and data["scenes"] == ["scene-0103"]
    assert data["map"] == pytest.approx(1.0) and data["nds"] > 0.97
    iou = data["mapseg_iou"]
    assert iou["drivable_area"] == pytest.approx(1.0) and iou["ped_crossing"] == pytest.approx(1.0)
    assert iou["divider"] == pytest.approx(1.0) and iou["walkway"] == 0.0          # no GT walkway anywhere
    assert data["mapseg_miou"] == pytest.approx(0.5) and data["mapseg_miou_present"] == pytest.approx(1.0)
    # the tiny config fuses the map over the scene's keyframes: true maps, carried by true poses, stay true
    assert data["map_temporal_fusion"]["enabled"] and data["mapseg_miou_single_frame"] == pytest.approx(0.5)
    assert data["mapseg_iou"] == pytest.approx(data["mapseg_iou_single_frame"], abs=1e-6)
    assert set(data["tp_errors_named"]) == {"mATE", "mASE", "mAOE", "mAVE", "mAAE"}
    assert result["map"] == data["map"]
    out = tmp_path / "out"
    assert len(list(out.glob("bev_*.png"))) == 3 and (out / "latency.png").is_file()
    assert list(out.glob("camera_*.png")) and (out / "eval.md").is_file() and (out / "submission.json").is_file()
    sub = json.loads((out / "submission.json").read_text())
    assert sub["meta"]["use_camera"] and sub["meta"]["use_lidar"] and len(sub["results"]) == 3


def test_modality_feeding():
    from bevfusion_ros.frame import CameraInput, Frame
    frame = Frame(0, np.ones((10, 5), np.float32), [CameraInput("CAM_FRONT", np.zeros((4, 4, 3), np.uint8),
                                                                np.eye(3), np.eye(4))])
    assert offline.apply_modality(frame, "lidar").cameras[0].image is None
    assert frame.cameras[0].image is not None                                       # the input is not mutated
    assert offline.apply_modality(frame, "camera").points.shape == (0, 5)
    assert offline.check_modality(None, "fusion") == "fusion"
    assert offline.check_modality("lidar", "fusion") == "lidar"
    with pytest.raises(UserError, match="lidar-only model"):
        offline.check_modality("camera", "lidar")


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    import torch
    from bevfusion_ros.model.bevfusion import build_model
    from bevfusion_ros.model.checkpoint import save_checkpoint
    from bevfusion_ros.model.config import load_config
    torch.manual_seed(0)
    config = load_config(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(path, build_model(config), config, {"note": "untrained, for tests"})
    return path


def test_eval_cli_real_pipeline_writes_complete_report(tmp_path, untrained_checkpoint, capsys, monkeypatch):
    """The real pipeline (untrained tiny fusion model, onnxruntime back-end, fed cameras only to keep the
    test fast) on two keyframes: the run completes and eval.json has every required key."""
    from .conftest import build_db
    monkeypatch.setenv("BEVFUSION_ONNX_CACHE", str(tmp_path / "onnx-cache"))   # on-demand export goes here
    db = build_db(tmp_path / "data", n_samples=2, sensors=True, with_map=True)
    rc = cli_main(["eval", "--config", str(TINY), "--checkpoint", str(untrained_checkpoint), "--dataroot",
                   db["dataroot"], "--out", str(tmp_path / "out"), "--backend", "onnxruntime", "--threads", "2",
                   "--figures", "1", "--quiet", "--modality", "camera"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    for key in REQUIRED:
        assert data[key] is not None, key
    assert 0.0 <= data["map"] <= 1.0 and 0.0 <= data["nds"] <= 1.0 and 0.0 <= data["mapseg_miou"] <= 1.0
    assert set(data["per_class_ap"]) == {"car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                         "motorcycle", "bicycle", "traffic_cone", "barrier"}
    assert set(data["mapseg_iou"]) == {"drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area",
                                       "divider"}
    assert data["backend"] == "onnxruntime" and data["modality"] == "camera" and data["num_samples"] == 2
    assert json.loads((tmp_path / "out" / "submission.json").read_text())["meta"]["use_lidar"] is False
    assert list((tmp_path / "onnx-cache").glob("*/manifest.json"))


def _run_cli_error(args, capsys) -> str:
    rc = cli_main(["eval", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_eval_cli_bad_inputs(tiny_nusc_db, tmp_path, capsys, untrained_checkpoint):
    base = ["--config", str(TINY), "--dataroot", tiny_nusc_db["dataroot"], "--out", str(tmp_path / "o")]
    assert "not found" in _run_cli_error([*base, "--checkpoint", str(tmp_path / "missing.pt")], capsys)
    assert "unknown back-end" in _run_cli_error([*base, "--checkpoint", str(untrained_checkpoint), "--backend",
                                                 "tpu"], capsys)
    assert "needs a v1.0-trainval" in _run_cli_error([*base, "--checkpoint", str(untrained_checkpoint),
                                                      "--eval-set", "val"], capsys)
    assert "no scene" in _run_cli_error([*base, "--checkpoint", str(untrained_checkpoint),
                                         "--eval-set", "mini_train"], capsys)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"garbage")
    assert "corrupt" in _run_cli_error([*base, "--checkpoint", str(bad)], capsys)
    assert "not a directory" in _run_cli_error(["--config", str(TINY), "--checkpoint", str(untrained_checkpoint),
                                                "--dataroot", str(tmp_path / "nodata"), "--out", str(tmp_path / "o")],
                                               capsys)
