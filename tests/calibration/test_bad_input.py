"""Bad input gives a clear error or a refused result with the reason; the prior is never replaced by an
invalid transform."""
import math

import numpy as np
import pytest

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.semalign import Calibrator
from bevfusion_ros.calibration.semantics import CameraSemantics, SemanticFrame


def _assert_refused(result, prior, *words):
    assert not result.success
    for name, T in prior.items():
        assert np.array_equal(result.T[name], np.asarray(T, np.float64)) or not np.all(np.isfinite(T))
    for word in words:
        assert word in result.reason, result.reason


def test_no_frames_and_nan_prior_are_refused(toy, fast_config):
    frames, truth = toy
    calibrator = Calibrator(fast_config())
    _assert_refused(calibrator.calibrate([], {"CAM_FRONT": truth["CAM_FRONT"]}), {}, "no frames")
    bad = truth["CAM_FRONT"].copy()
    bad[0, 3] = math.nan
    result = calibrator.calibrate(frames, {"CAM_FRONT": bad})
    assert not result.success and "not a finite rigid" in result.reason


def test_all_points_behind_the_camera_is_refused(toy, fast_config):
    frames, truth = toy
    front = frames[0]
    behind = front.points.copy()
    behind[:, 0] = -np.abs(behind[:, 0]) - 1.0        # everything behind CAM_FRONT (which looks along +x)
    frame = SemanticFrame(behind, front.point_labels, {"CAM_FRONT": front.cameras["CAM_FRONT"]})
    prior = {"CAM_FRONT": truth["CAM_FRONT"]}
    _assert_refused(Calibrator(fast_config()).calibrate([frame], prior), prior, "no labeled LiDAR points in front")


def test_no_semantic_overlap_is_refused(toy, fast_config):
    """Image classes disjoint from the LiDAR classes (frames that do not overlap semantically)."""
    frames, truth = toy
    cam = frames[0].cameras["CAM_FRONT"]
    shifted = CameraSemantics("CAM_FRONT", np.where(cam.labels >= 0, cam.labels + 10, -1), cam.intrinsic)
    frame = SemanticFrame(frames[0].points, frames[0].point_labels, {"CAM_FRONT": shifted})
    prior = {"CAM_FRONT": truth["CAM_FRONT"]}
    _assert_refused(Calibrator(fast_config()).calibrate([frame], prior), prior, "no usable", "overlap")


def test_unlabeled_and_nan_points_are_ignored_not_fatal(toy, fast_config, perturb):
    frames, truth = toy
    points = frames[0].points.copy()
    labels = frames[0].point_labels.copy()
    points[::7] = np.nan
    labels[labels == 2] = -1                          # one class missing on the LiDAR side (empty class)
    frame = SemanticFrame(points, labels, frames[0].cameras)
    prior = {"CAM_FRONT": perturb(truth["CAM_FRONT"], (2.0, 0.0, -2.0), (0.1, 0.0, 0.0))}
    result = Calibrator(fast_config()).calibrate([frame], prior)
    assert result.success, result.reason
    assert lie.is_rigid(result.T["CAM_FRONT"])


def test_degenerate_scene_without_structure_is_refused(toy, fast_config, perturb):
    """One class filling the whole image: every candidate scores the same, nothing beats the prior."""
    frames, truth = toy
    cam = frames[0].cameras["CAM_FRONT"]
    flat = CameraSemantics("CAM_FRONT", np.zeros_like(cam.labels), cam.intrinsic)
    labels = np.zeros_like(frames[0].point_labels)
    frame = SemanticFrame(frames[0].points, labels, {"CAM_FRONT": flat})
    prior = {"CAM_FRONT": perturb(truth["CAM_FRONT"], (3.0, 0.0, 0.0), (0.0, 0.0, 0.0))}
    _assert_refused(Calibrator(fast_config()).calibrate([frame], prior), prior, "no improvement")


def test_bad_frame_data_raises_clear_errors():
    with pytest.raises(ValueError, match="one label per point"):
        SemanticFrame(np.zeros((5, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match="H x W"):
        CameraSemantics("CAM", np.zeros(10, int), np.eye(3))
    with pytest.raises(ValueError, match="finite 3x3"):
        CameraSemantics("CAM", np.zeros((4, 4), int), np.full((3, 3), np.nan))


def test_unknown_mode_raises(fast_config):
    with pytest.raises(ValueError, match="mode"):
        Calibrator(fast_config(mode="both"))
