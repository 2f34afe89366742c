"""Frames, transforms, quaternions, boxes and time: the project's geometry conventions, in one place.

Conventions (ARCHITECTURE.md §4):
- Right-handed frames. The LiDAR frame is nuScenes' LIDAR_TOP sensor frame as mounted on the nuScenes
  car: x to the right, y forward, z up (lidar2ego is a ~90 deg yaw; ARCHITECTURE.md's "x forward, y left"
  describes the ego frame, not LIDAR_TOP). The model, its BEV grids and its boxes live in this frame, as
  in BEVFusion; a LiDAR mounted otherwise is expressed in it through /tf. Ego (base_link): x forward,
  y left, z up. Camera optical frame: z forward, x right, y down.
- ``T_a_b`` is a 4x4 homogeneous matrix that maps points expressed in frame b into frame a
  (``p_a = T_a_b @ p_b``). Compose as ``T_a_c = T_a_b @ T_b_c``.
- Quaternions: nuScenes stores ``(w, x, y, z)``; ROS messages store ``(x, y, z, w)``. Every conversion
  between the two goes through :func:`quat_wxyz_to_xyzw` / :func:`quat_xyzw_to_wxyz` so the order is
  never guessed at a call site.
- Internal boxes: ``[x, y, z, l, w, h, yaw, vx, vy]`` with z at the box centre, l along the heading,
  yaw about +z measured from +x. nuScenes boxes carry size as ``(w, l, h)`` and a full quaternion;
  :func:`box_to_nuscenes` / :func:`box_from_nuscenes` are the only converters.
- Time: nuScenes timestamps are integer microseconds; ROS uses ``(sec, nanosec)``.

Why one module: every bug class in camera-LiDAR stacks we know of (swapped quaternion order, wlh vs lwh,
inverse transforms) comes from a convention re-derived at a call site. Here they are written once and
tested (tests/test_geometry.py).
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- quaternions


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """nuScenes (w, x, y, z) -> ROS (x, y, z, w). Works on [..., 4]."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:4], q[..., 0:1]], axis=-1)


def quat_xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """ROS (x, y, z, w) -> nuScenes (w, x, y, z). Works on [..., 4]."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:4], q[..., 0:3]], axis=-1)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix [..., 3, 3] of a (w, x, y, z) quaternion (normalized here)."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(~np.isfinite(norm)) or np.any(norm < 1e-12):
        raise ValueError(f"quaternion must be finite and non-zero, got {q!r}")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat_wxyz(rot: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion with w >= 0 of a 3x3 rotation matrix (Shepperd's method, stable)."""
    m = np.asarray(rot, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"rotation matrix must be 3x3, got shape {m.shape}")
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def yaw_to_quat_wxyz(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by `yaw` about +z."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def quat_wxyz_to_yaw(q: np.ndarray) -> float:
    """Heading about +z of a (w, x, y, z) quaternion: the angle of the rotated +x axis in the xy plane."""
    rot = quat_wxyz_to_matrix(q)
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


# ----------------------------------------------------------------------------- transforms


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 T from a 3x3 rotation matrix or a (w, x, y, z) quaternion, and a translation (3,)."""
    rotation = np.asarray(rotation, dtype=np.float64)
    rot = quat_wxyz_to_matrix(rotation) if rotation.shape == (4,) else rotation
    if rot.shape != (3, 3):
        raise ValueError(f"rotation must be a 3x3 matrix or a (w,x,y,z) quaternion, got {rotation.shape}")
    translation = np.asarray(translation, dtype=np.float64).reshape(3)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = translation
    return out


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform, exact (R^T, -R^T t) rather than a general matrix inverse."""
    transform = np.asarray(transform, dtype=np.float64)
    out = np.eye(4)
    rot_t = transform[:3, :3].T
    out[:3, :3] = rot_t
    out[:3, 3] = -rot_t @ transform[:3, 3]
    return out


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply T (4x4) to points [N, >=3]; columns past xyz are carried through unchanged."""
    points = np.asarray(points)
    xyz = points[:, :3].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
    out = points.copy()
    out[:, :3] = xyz.astype(points.dtype, copy=False)
    return out


def project_to_image(points_cam: np.ndarray, intrinsic: np.ndarray, min_depth: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of camera-optical-frame points [N,3] with K (3x3).

    Returns ``(uv [N,2], in_front [N] bool)``; uv of points with depth < min_depth is meaningless and
    masked out by ``in_front`` rather than dropped, so indices stay aligned with the input.
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    depth = points_cam[:, 2]
    in_front = depth > min_depth
    safe = np.where(in_front, depth, 1.0)
    uvw = points_cam[:, :3] @ np.asarray(intrinsic, dtype=np.float64).T
    uv = uvw[:, :2] / safe[:, None]
    return uv, in_front


# ----------------------------------------------------------------------------- boxes

BOX_DIM = 9  # x, y, z, l, w, h, yaw, vx, vy


def box_to_nuscenes(box: np.ndarray) -> dict:
    """Internal box [9] -> nuScenes fields: translation, size (w, l, h), rotation (w,x,y,z), velocity."""
    box = np.asarray(box, dtype=np.float64)
    x, y, z, length, width, height, yaw, vx, vy = box[:9]
    return {
        "translation": [float(x), float(y), float(z)],
        "size": [float(width), float(length), float(height)],
        "rotation": [float(v) for v in yaw_to_quat_wxyz(yaw)],
        "velocity": [float(vx), float(vy)],
    }


def box_from_nuscenes(translation, size_wlh, rotation_wxyz, velocity=(0.0, 0.0)) -> np.ndarray:
    """nuScenes fields -> internal box [9]. NaN velocity (single-annotation instances) becomes 0."""
    width, length, height = size_wlh
    vx, vy = (0.0 if not np.isfinite(v) else float(v) for v in velocity[:2])
    return np.array([*translation, length, width, height, quat_wxyz_to_yaw(rotation_wxyz), vx, vy],
                    dtype=np.float64)


def transform_boxes(transform: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Express boxes [N,9] given in frame b in frame a (T_a_b). Yaw gains the transform's heading;
    velocities are rotated (they are free vectors, not points). Assumes T keeps z up (roll/pitch small),
    which holds for sensor->ego->global in driving data."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, BOX_DIM)
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ transform[:3, :3].T + transform[:3, 3]
    heading = np.arctan2(transform[1, 0], transform[0, 0])
    out[:, 6] = wrap_angle(boxes[:, 6] + heading)
    vel = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1) @ transform[:3, :3].T
    out[:, 7:9] = vel[:, :2]
    return out


def wrap_angle(angle):
    """Wrap to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners [N, 8, 3] of boxes [N, >=7]. Order: bottom face (+l+w, +l-w, -l-w, -l+w), then top face."""
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    local = np.stack([sx * boxes[:, 3:4], sy * boxes[:, 4:5], sz * boxes[:, 5:6]], -1)  # N,8,3
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], -1) + boxes[:, None, :3]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Boolean mask [N_points, N_boxes]: whether each point lies inside each box [M, >=7]."""
    points = np.asarray(points, dtype=np.float64)[:, :3]
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    rel = points[:, None, :] - boxes[None, :, :3]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local_x = rel[..., 0] * cos + rel[..., 1] * sin
    local_y = -rel[..., 0] * sin + rel[..., 1] * cos
    return ((np.abs(local_x) <= boxes[:, 3] / 2) & (np.abs(local_y) <= boxes[:, 4] / 2)
            & (np.abs(rel[..., 2]) <= boxes[:, 5] / 2))


# ----------------------------------------------------------------------------- time


def stamp_to_us(sec: int, nanosec: int) -> int:
    """ROS (sec, nanosec) -> nuScenes integer microseconds (rounded to nearest)."""
    return int(sec) * 1_000_000 + (int(nanosec) + 500) // 1000


def us_to_stamp(timestamp_us: int) -> tuple[int, int]:
    """nuScenes microseconds -> ROS (sec, nanosec). Exact inverse of :func:`stamp_to_us`."""
    timestamp_us = int(timestamp_us)
    return timestamp_us // 1_000_000, (timestamp_us % 1_000_000) * 1000


def stamp_to_s(sec: int, nanosec: int) -> float:
    return int(sec) + int(nanosec) * 1e-9
