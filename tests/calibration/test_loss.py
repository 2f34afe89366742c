"""The semantic alignment loss: minimal at the true extrinsics, growing with the perturbation."""
import math

import numpy as np
import torch

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.loss import alignment_loss, project
from bevfusion_ros.calibration.semalign import Calibrator


def _problem(toy, fast_config, camera="CAM_FRONT"):
    frames, truth = toy
    return Calibrator(fast_config())._problem(frames, [camera], {camera: truth[camera]}, None), truth[camera]


def test_loss_is_minimal_at_truth_and_grows_with_perturbation(toy, fast_config):
    problem, T_true = _problem(toy, fast_config)
    fine = len(problem.fields) - 1
    for axis in range(6):
        unit = math.radians(1.0) if axis < 3 else 0.05
        xi = np.zeros((5, 6))
        xi[:, axis] = np.array([0.0, 1.0, 2.0, 4.0, 8.0]) * unit
        for sign in (1.0, -1.0):
            T = lie.apply_increment(torch.from_numpy(sign * xi), torch.from_numpy(T_true)).float()
            losses = alignment_loss(problem, T, fine).numpy()
            assert losses[0] < losses[1] < losses[2] < losses[3] < losses[4] or (
                axis >= 3 and losses[0] < losses[2] < losses[4]), (axis, sign, losses)


def test_loss_has_gradients_for_rotation_and_translation(toy, fast_config):
    problem, T_true = _problem(toy, fast_config)
    xi = torch.tensor([[0.02, -0.01, 0.015, 0.1, -0.05, 0.08]], dtype=torch.float64, requires_grad=True)
    loss = alignment_loss(problem, lie.apply_increment(xi, torch.from_numpy(T_true)).float(), 1)
    (grad,) = torch.autograd.grad(loss.sum(), xi)
    assert torch.all(torch.isfinite(grad)) and torch.all(grad.abs() > 0)


def test_pushing_points_out_of_view_scores_chance_not_low(toy, fast_config):
    """A candidate that turns the camera away (nothing visible) must not beat the truth."""
    problem, T_true = _problem(toy, fast_config)
    away = lie.apply_increment(torch.tensor([[0.0, math.pi, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
                               torch.from_numpy(T_true)).float()
    _, visible = project(problem, away)
    assert not (visible[..., 0] & (problem.point_weights > 0)).any()
    truth_loss = float(alignment_loss(problem, torch.from_numpy(T_true)[None].float(), 2))
    away_loss = float(alignment_loss(problem, away, 2))
    chance = float((problem.chance[2] * problem.group_weights).sum() / problem.group_weights.sum())
    assert away_loss > 5 * truth_loss
    assert abs(away_loss - chance) < 1e-6


def test_batched_loss_matches_one_by_one(toy, fast_config):
    problem, T_true = _problem(toy, fast_config)
    xi = torch.from_numpy(np.random.default_rng(0).normal(scale=[0.03] * 3 + [0.2] * 3, size=(7, 6)))
    T = lie.apply_increment(xi, torch.from_numpy(T_true)).float()
    batched = alignment_loss(problem, T, 1)
    single = torch.cat([alignment_loss(problem, T[i:i + 1], 1) for i in range(7)])
    assert torch.allclose(batched, single, atol=1e-6)
