import numpy as np
import torch

from bevfusion_ros.calibration import lie


def test_exp_log_round_trip_including_small_and_near_pi_angles():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    angles = np.concatenate([[0.0, 1e-9, 1e-5], rng.uniform(0, np.pi - 1e-2, 44), [np.pi - 1e-4, np.pi - 1e-6, 3.0]])
    w = torch.from_numpy(vecs * angles[:, None])
    R = lie.so3_exp(w)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3), atol=1e-12)
    back = lie.so3_log(R)
    assert torch.allclose(back, w, atol=1e-6)


def test_exp_gradient_is_finite_at_zero():
    w = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    lie.so3_exp(w).sum().backward()
    assert torch.all(torch.isfinite(w.grad))


def test_increment_composes_on_the_left_and_errors_measure_it():
    T0 = np.eye(4)
    T0[:3, 3] = [1.0, 2.0, 3.0]
    xi = np.array([0.0, 0.0, np.radians(2.0), 0.1, 0.0, 0.0])
    T = lie.apply_increment(torch.from_numpy(xi)[None], torch.from_numpy(T0))[0].numpy()
    assert np.allclose(lie.increment_between(T, T0), xi, atol=1e-12)
    rot, trans, rot_axes, trans_axes = lie.transform_error(T, T0)
    assert abs(rot - 2.0) < 1e-9 and abs(rot_axes[2] - 2.0) < 1e-9
    expected_shift = np.linalg.norm(T[:3, 3] - T[:3, :3] @ T0[:3, 3])
    assert abs(trans - expected_shift) < 1e-12


def test_is_rigid_rejects_nan_and_scaled_matrices():
    assert lie.is_rigid(np.eye(4))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    assert not lie.is_rigid(bad)
    assert not lie.is_rigid(np.diag([2.0, 1.0, 1.0, 1.0]))
