"""SO(3)/SE(3) helpers for calibration, batched, in torch (and numpy wrappers for results).

Only what SemAlign needs: the exponential and logarithm of so(3), left-composition of an increment with a
4x4 transform, and error metrics. Increments are 6-vectors ``[w (so(3), rad), v (m)]`` applied on the left:

    T = delta(w, v) @ T0,   delta = [[exp(w), v], [0, 1]]

so for ``T0 = T_cam_lidar`` the rotation increment turns the camera about its own optical centre and ``v``
shifts it in the camera frame. No Euler angles appear in the optimization (they have singularities and
couple axes); roll/pitch/yaw exist only in :mod:`calib_io` for the file format and in the evaluation's
per-axis perturbations.
"""
from __future__ import annotations

import numpy as np
import torch


def hat(w: torch.Tensor) -> torch.Tensor:
    """Skew matrices [..., 3, 3] of vectors [..., 3]."""
    zero = torch.zeros_like(w[..., 0])
    wx, wy, wz = w[..., 0], w[..., 1], w[..., 2]
    return torch.stack([
        torch.stack([zero, -wz, wy], -1),
        torch.stack([wz, zero, -wx], -1),
        torch.stack([-wy, wx, zero], -1),
    ], -2)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotation matrices [..., 3, 3] of rotation vectors [..., 3] (angle = norm, radians).

    Uses the Taylor series below 1e-4 rad so the value and its gradient are finite at w = 0 (refinement
    starts there)."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]          # [..., 1, 1]
    theta = torch.sqrt(theta2.clamp_min(1e-24))
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    k = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def so3_log(rot: torch.Tensor) -> torch.Tensor:
    """Rotation vectors [..., 3] of rotation matrices [..., 3, 3]; stable near 0 and near pi."""
    rot = rot.to(torch.float64) if rot.dtype != torch.float64 else rot
    trace = rot[..., 0, 0] + rot[..., 1, 1] + rot[..., 2, 2]
    cos = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    vee = torch.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0],
                       rot[..., 1, 0] - rot[..., 0, 1]], -1)
    sin = torch.sin(theta)
    small = theta < 1e-6
    scale = torch.where(small, 0.5 + theta * theta / 12.0, theta / (2.0 * sin.clamp_min(1e-12)))
    out = vee * scale[..., None]
    # Near pi: the axis comes from the symmetric part, (R + R^T) / 2 - cos(theta) I = (1 - cos(theta)) a a^T.
    near_pi = theta > np.pi - 1e-3
    if bool(near_pi.any()):
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        sym = (rot + rot.transpose(-1, -2)) / 2.0 - cos[..., None, None] * eye
        diag = torch.diagonal(sym, dim1=-2, dim2=-1).clamp_min(0.0)
        idx = diag.argmax(-1, keepdim=True)
        col = torch.gather(sym, -1, idx[..., None, :].expand(*sym.shape[:-1], 1))[..., 0]
        axis = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sign = torch.sign((axis * vee).sum(-1, keepdim=True))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        out = torch.where(near_pi[..., None], axis * sign * theta[..., None], out)
    return out


def apply_increment(xi: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Left-compose increments xi [K, 6] = (w, v) with base transforms [K, 4, 4] (or one [4, 4]).

    Returns [K, 4, 4]: R = exp(w) R0, t = exp(w) t0 + v."""
    if base.dim() == 2:
        base = base.expand(xi.shape[0], 4, 4)
    rot_inc = so3_exp(xi[:, :3])
    rot = rot_inc @ base[:, :3, :3]
    trans = (rot_inc @ base[:, :3, 3:4])[..., 0] + xi[:, 3:6]
    top = torch.cat([rot, trans[..., None]], -1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=xi.dtype, device=xi.device).expand(xi.shape[0], 1, 4)
    return torch.cat([top, bottom], -2)


def increment_between(T: np.ndarray, T0: np.ndarray) -> np.ndarray:
    """The 6-vector (w, v) with T = delta(w, v) @ T0 (numpy, float64)."""
    delta = np.asarray(T, np.float64) @ invert(np.asarray(T0, np.float64))
    w = so3_log(torch.from_numpy(delta[:3, :3])).numpy()
    return np.concatenate([w, delta[:3, 3]])


def invert(T: np.ndarray) -> np.ndarray:
    """Exact inverse of rigid 4x4 transforms [..., 4, 4] (numpy)."""
    T = np.asarray(T, np.float64)
    out = np.zeros_like(T)
    rot_t = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def rotation_angle_deg(rot: np.ndarray) -> float:
    """Geodesic angle of a 3x3 rotation in degrees."""
    cos = (np.trace(np.asarray(rot, np.float64)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def transform_error(T_pred: np.ndarray, T_true: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Error of a predicted transform: E = T_pred @ T_true^-1.

    Returns (rotation error deg (geodesic), translation error m (norm), per-axis rotation error deg
    (|rotation vector| components), per-axis translation error m (|components|))."""
    err = np.asarray(T_pred, np.float64) @ invert(T_true)
    w = so3_log(torch.from_numpy(err[:3, :3].copy())).numpy()
    return (rotation_angle_deg(err), float(np.linalg.norm(err[:3, 3])), np.abs(np.degrees(w)),
            np.abs(err[:3, 3]))


def is_rigid(T: np.ndarray, tol: float = 1e-4) -> bool:
    """Finite 4x4 with an orthonormal, right-handed rotation and a [0,0,0,1] last row."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    rot = T[:3, :3]
    return bool(np.allclose(rot @ rot.T, np.eye(3), atol=tol) and abs(np.linalg.det(rot) - 1.0) < tol
                and np.allclose(T[3], [0, 0, 0, 1], atol=tol))
