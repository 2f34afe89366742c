"""Map-segmentation IoU protocol (known answers) and map GT rasterization with the devkit's NuScenesMap."""
from __future__ import annotations


import numpy as np
import pytest

from bevfusion_ros.eval import map_gt, mapseg

from .conftest import write_map  # noqa: E402


def test_thresholds_are_bevfusions():
    assert mapseg.THRESHOLDS == pytest.approx([0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65])


def test_iou_known_answers_single_class():
    # 10 cells: GT positive on the first 4. probs chosen so each threshold gives a known confusion.
    gt = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool).reshape(1, 2, 5)
    probs = np.array([0.9, 0.6, 0.5, 0.3, 0.62, 0.4, 0.1, 0.0, 0.0, 0.36], np.float32).reshape(1, 2, 5)
    acc = mapseg.MapSegAccumulator(classes=["drivable_area"])
    acc.update(probs, gt)
    ious = acc.ious()[0]
    # t=0.35: pred {0,1,2,4,5,9}: TP 3, FP 3, FN 1 -> 3/7
    # t=0.40: pred {0,1,2,4,5}:   TP 3, FP 2, FN 1 -> 3/6 (0.4 >= 0.4)
    # t=0.45: pred {0,1,2,4}:     TP 3, FP 1, FN 1 -> 3/5
    # t=0.50: pred {0,1,2,4}:     3/5 (0.5 >= 0.5)
    # t=0.55: pred {0,1,4}:       TP 2, FP 1, FN 2 -> 2/5
    # t=0.60: pred {0,1,4}:       2/5
    # t=0.65: pred {0}:           TP 1, FP 0, FN 3 -> 1/4
    np.testing.assert_allclose(ious, [3 / 7, 3 / 6, 3 / 5, 3 / 5, 2 / 5, 2 / 5, 1 / 4], atol=1e-6)
    out = acc.compute()
    assert out["iou"]["drivable_area"] == pytest.approx(0.6, abs=1e-6)
    assert out["best_threshold"]["drivable_area"] == pytest.approx(0.45)


def test_iou_accumulates_over_dataset_not_per_frame():
    # frame 1: perfect on 1 GT cell; frame 2: 9 GT cells all missed. Dataset IoU = 1/10, per-frame mean 0.5.
    acc = mapseg.MapSegAccumulator(classes=["walkway"])
    acc.update(np.array([[[1.0, 0.0]]]), np.array([[[1, 0]]]))
    acc.update(np.zeros((1, 3, 3)), np.ones((1, 3, 3)))
    assert acc.compute()["iou"]["walkway"] == pytest.approx(0.1, abs=1e-6)


def test_miou_is_mean_of_per_class_max():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    gt = rng.uniform(size=(3, 20, 20)) > 0.5
    probs = np.stack([gt[0] * 0.9, gt[1] * 0.5 + 0.1, np.zeros((20, 20))]).astype(np.float32)
    # class a: perfect at every threshold; class b: perfect for t <= 0.6 (0.6 >= 0.6), 0 at 0.65;
    # class c: never predicted -> 0
    out = mapseg.mapseg_iou([probs], [gt], classes=classes)
    assert out["iou"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0}, abs=1e-6)
    assert out["iou_by_threshold"]["b"]["0.65"] == pytest.approx(0.0)
    assert out["miou"] == pytest.approx(2 / 3, abs=1e-6)
    # a class with neither GT nor predictions scores 0 in miou (BEVFusion) but is left out of miou_present
    gt2 = gt.copy()
    gt2[2] = False
    out = mapseg.mapseg_iou([probs], [gt2], classes=classes)
    assert out["classes_with_gt"] == ["a", "b"]
    assert out["miou"] == pytest.approx(2 / 3, abs=1e-6) and out["miou_present"] == pytest.approx(1.0, abs=1e-6)


def test_valid_mask_and_bad_shapes():
    acc = mapseg.MapSegAccumulator(classes=["x"])
    probs = np.array([[[0.9, 0.9]]])
    gt = np.array([[[1, 0]]])
    acc.update(probs, gt, valid=np.array([[True, False]]))
    assert acc.compute()["iou"]["x"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="must both be"):
        acc.update(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)))


def test_resample_to_grid():
    probs = np.zeros((1, 4, 4), np.float32)
    probs[0, 3, 0] = 1.0      # cell x in [1, 2), y in [-2, -1) on a 1 m grid starting at (-2, -2)
    out = mapseg.resample_to_grid(probs, (-2.0, -2.0, 1.0), [-4.0, 4.0, 0.5], [-4.0, 4.0, 0.5])
    assert out.shape == (1, 16, 16)
    xs = -4 + (np.arange(16) + 0.5) * 0.5
    ix, iy = np.nonzero(out[0])
    assert set(xs[ix]) == {1.25, 1.75} and set(xs[iy]) == {-1.75, -1.25}


# ----------------------------------------------------------------------------- map GT


def test_map_gt_is_in_lidar_frame_x_then_y(tmp_path):
    yaw = np.deg2rad(117.0)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    T[:3, 3] = [600.0, 1500.0, 0.0]
    write_map(tmp_path, T)
    maps = map_gt.MapCache(tmp_path)
    xb, yb = [-50.0, 50.0, 0.5], [-50.0, 50.0, 0.5]
    gt = map_gt.rasterize_map(maps.get("singapore-onenorth"), T, xb, yb)
    assert gt.shape == (6, 200, 200) and gt.dtype == bool
    xs = -50 + (np.arange(200) + 0.5) * 0.5
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    expect_da = (X >= 10) & (X <= 30) & (Y >= -5) & (Y <= 5)
    expect_pc = (X >= -20) & (X <= -10) & (Y >= 10) & (Y <= 20)

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()
    assert iou(gt[0], expect_da) > 0.9
    assert iou(gt[1], expect_pc) > 0.85
    assert iou(gt[0], expect_da.T) < 0.1           # not transposed
    assert iou(gt[1], expect_pc[::-1]) < 0.1       # not flipped
    div_cells = np.argwhere(gt[5])
    assert len(div_cells) > 50
    assert np.all(np.abs(xs[div_cells[:, 1]] - 20.0) < 1.5)
    assert xs[div_cells[:, 0]].min() < 2 and xs[div_cells[:, 0]].max() > 38
    assert not gt[2].any() and not gt[3].any() and not gt[4].any()


def test_map_gt_missing_map_is_user_error(tmp_path):
    from bevfusion_ros.errors import UserError
    with pytest.raises(UserError, match="map expansion"):
        map_gt.MapCache(tmp_path).get("boston-seaport")
    with pytest.raises(UserError, match="unknown map location"):
        map_gt.MapCache(tmp_path).get("atlantis")
