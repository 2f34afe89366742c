"""Report writers: strict JSON + markdown, BEV / camera / latency figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevfusion_ros.classes import DETECTION_CLASSES, MAP_CLASSES
from bevfusion_ros.eval import report


def test_write_report_json_and_markdown(tmp_path):
    metrics = {"map": np.float32(0.5), "nds": 0.6, "mapseg_miou": float("nan"), "frames": np.int64(3),
               "per_class_ap": {c: 0.5 for c in DETECTION_CLASSES},
               "per_class_tp_errors": {c: {"trans_err": 0.1, "attr_err": float("nan")} for c in DETECTION_CLASSES},
               "tp_errors": {"trans_err": 0.1, "scale_err": 0.2, "orient_err": 0.3, "vel_err": 0.4, "attr_err": 0.5},
               "mapseg_iou": {c: 0.7 for c in MAP_CLASSES}, "latency_ms": {"p50": 12.0, "p90": 20.0},
               "array": np.arange(3)}
    img = tmp_path / "figs" / "bev.png"
    img.parent.mkdir()
    img.write_bytes(b"")
    out = report.write_report(tmp_path, metrics, title="Test", images=[img])
    data = json.loads(out["json"].read_text())
    assert data["map"] == pytest.approx(0.5) and data["mapseg_miou"] is None and data["frames"] == 3
    assert data["array"] == [0, 1, 2]
    md = out["markdown"].read_text()
    assert "# Test" in md and "| car | 0.500 |" in md and "mATE" in md and "| divider | 0.700 |" in md
    assert "## latency_ms" in md and "figs/bev.png" in md and "n/a" in md


def test_plot_bev_and_latency(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-50, 50, (5000, 3)), np.zeros((5000, 2))], 1)
    gt = np.array([[10, 5, 0, 4.5, 2, 1.6, 0.3, 0, 0], [-20, -3, 0, 0.7, 0.7, 1.7, 0, 0, 0]])
    pred = gt + 0.3
    probs = rng.uniform(size=(6, 200, 200)).astype(np.float32)
    path = report.plot_bev(tmp_path / "bev.png", points=pts, gt_boxes=gt, pred_boxes=pred,
                           pred_labels=np.array([0, 5]), pred_scores=np.array([0.9, 0.2]),
                           map_probs=probs, gt_map=probs > 0.5, map_bounds=(-50.0, -50.0, 0.5), title="frame 0")
    assert path.stat().st_size > 10000
    # no boxes, no map at all still renders
    assert report.plot_bev(tmp_path / "empty.png", pred_boxes=np.zeros((0, 9))).is_file()
    hist = report.plot_latency_histogram(tmp_path / "lat.png", {"model": rng.gamma(5, 10, 200), "empty": []},
                                         budget_ms=80)
    assert hist.stat().st_size > 5000
    s = report.latency_stats([10, 20, 30, float("nan")])
    assert s["count"] == 3 and s["p50"] == pytest.approx(20.0)
    assert report.latency_stats([])["p50"] is None


def test_camera_boxes_project_where_expected(tmp_path):
    # camera looking along LiDAR +x: optical z = lidar x, optical x = -lidar y, optical y = -lidar z
    T_lidar_cam = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    img = np.zeros((480, 640, 3), np.uint8)
    box_front = np.array([[20.0, 0, 0, 4, 2, 2, 0, 0, 0]])
    uv, ok = report.project_boxes(box_front, K, T_lidar_cam)
    assert ok.all()
    centre = uv[0].mean(axis=0)
    assert abs(centre[0] - 320) < 5 and abs(centre[1] - 240) < 5
    drawn = report.plot_camera_boxes(img, box_front, K, T_lidar_cam, labels=np.array([0]), path=tmp_path / "c.png")
    assert drawn.any() and (tmp_path / "c.png").is_file() and not img.any()
    behind = np.array([[-20.0, 0, 0, 4, 2, 2, 0, 0, 0]])
    assert not report.plot_camera_boxes(img, behind, K, T_lidar_cam).any()
    left = np.array([[20.0, 5.0, 0, 1, 1, 1, 0, 0, 0]])   # +y (left) -> smaller u
    assert report.project_boxes(left, K, T_lidar_cam)[0][0, :, 0].mean() < 320
