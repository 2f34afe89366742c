"""Search + refinement recover known perturbations on the exact toy scene."""
import numpy as np

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.semalign import Calibrator


def test_per_camera_recovers_a_known_perturbation(toy, fast_config, perturb):
    frames, truth = toy
    prior = {"CAM_FRONT": perturb(truth["CAM_FRONT"], (4.0, -3.0, 2.5), (0.2, -0.15, 0.25))}
    result = Calibrator(fast_config()).calibrate(frames, prior)
    rot, trans, _, _ = lie.transform_error(result.T["CAM_FRONT"], truth["CAM_FRONT"])
    assert result.success, result.reason
    assert rot < 1.0 and trans < 0.15, (rot, trans)   # per camera, 320x180 images: yaw vs x-shift valley
    assert result.loss < result.prior_loss
    assert 0.0 < result.confidence <= 1.0


def test_rig_mode_recovers_a_lidar_perturbation_from_all_cameras(toy, fast_config, perturb):
    frames, truth = toy
    delta = perturb(np.eye(4), (-3.0, 2.0, 5.0), (0.25, 0.2, -0.1))
    prior = {name: T @ delta for name, T in truth.items()}
    result = Calibrator(fast_config(mode="rig")).calibrate(frames, prior)
    assert result.success, result.reason
    for name in truth:
        rot, trans, _, _ = lie.transform_error(result.T[name], truth[name])
        assert rot < 0.3 and trans < 0.05, (name, rot, trans)


def test_calibrating_from_the_truth_does_not_move_far(toy, fast_config):
    frames, truth = toy
    result = Calibrator(fast_config(mode="rig")).calibrate(frames, truth)
    for name in truth:
        rot, trans, _, _ = lie.transform_error(result.T[name], truth[name])
        assert rot < 0.3 and trans < 0.05
