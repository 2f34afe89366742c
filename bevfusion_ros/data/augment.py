"""Training augmentation, applied consistently to points, boxes, map GT and camera geometry.

- Image (BEVFusion ImageAug3D, train mode): random resize in ``camera.resize_lim_train``, crop keeping the
  bottom (``bot_pct_lim``) at a random horizontal offset, random flip, random rotation in ``rot_lim``;
  returned as the 3x3 ``image_aug`` matrix the view transform undoes.
- Global (GlobalRotScaleTrans + RandomFlip3D): rotation about z, scaling, flips of y and x. Expressed as
  one 4x4 ``lidar_aug`` matrix A applied to points and boxes; the camera geometry becomes
  ``A @ T_lidar_cam`` (BEVFusion's lidar_aug_matrix) and the map GT is resampled (nearest) at A^-1 q.
"""
from __future__ import annotations

import numpy as np

from bevfusion_ros.geometry import wrap_angle
from bevfusion_ros.model.config import ModelConfig
from bevfusion_ros.model.preprocess import image_aug_matrix


def random_image_aug(config: ModelConfig, width: int, height: int, rng: np.random.Generator
                     ) -> tuple[float, np.ndarray]:
    cam = config.camera
    fh, fw = cam.image_size
    scale = cam.source_width / float(width)
    resize = float(rng.uniform(*cam.resize_lim_train)) * scale
    new_w, new_h = int(width * resize), int(height * resize)
    crop_y = int((1 - rng.uniform(*cam.bot_pct_lim)) * new_h) - fh
    crop_x = int(rng.uniform(0, max(0, new_w - fw)))
    flip = bool(cam.rand_flip and rng.random() < 0.5)
    rotate = float(rng.uniform(*cam.rot_lim))
    return resize, image_aug_matrix(resize, (crop_x, crop_y), flip, rotate, (fh, fw))


def random_lidar_aug(config: ModelConfig, rng: np.random.Generator) -> np.ndarray:
    tc = config.train
    theta = float(rng.uniform(*tc.rot_range))
    scale = float(rng.uniform(*tc.scale_range))
    flip = np.eye(4)
    if tc.flip and rng.random() < 0.5:
        flip[1, 1] = -1.0     # horizontal flip: y -> -y
    if tc.flip and rng.random() < 0.5:
        flip[0, 0] = -1.0     # vertical flip: x -> -x
    rot = np.eye(4)
    c, s = np.cos(theta), np.sin(theta)
    rot[:2, :2] = [[c, -s], [s, c]]
    rot[:3, :3] *= scale
    return flip @ rot


def augment_points(points: np.ndarray, A: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[:, :3] = points[:, :3] @ A[:3, :3].T + A[:3, 3]
    return out


def augment_boxes(boxes: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Boxes [M, 9] under A = flip @ (scale * rot_z): centres and velocities mapped by A's linear part,
    sizes scaled, yaw = heading of A applied to the box's x axis."""
    if len(boxes) == 0:
        return boxes.copy()
    lin = A[:3, :3]
    scale = float(np.cbrt(abs(np.linalg.det(lin))))
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ lin.T + A[:3, 3]
    out[:, 3:6] = boxes[:, 3:6] * scale
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], 1) @ lin[:2, :2].T
    out[:, 6] = wrap_angle(np.arctan2(heading[:, 1], heading[:, 0]))
    out[:, 7:9] = boxes[:, 7:9] @ lin[:2, :2].T
    return out


def augment_map(masks: np.ndarray, A: np.ndarray, xbound, ybound) -> np.ndarray:
    """Map GT [C, X, Y] (cell (i, j) centred at x0 + (i + .5) dx, y0 + (j + .5) dy) seen after A."""
    c, nx, ny = masks.shape
    xs = xbound[0] + (np.arange(nx) + 0.5) * xbound[2]
    ys = ybound[0] + (np.arange(ny) + 0.5) * ybound[2]
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    inv = np.linalg.inv(A[:2, :2])
    src = np.stack([gx.ravel(), gy.ravel()], 1) @ inv.T
    i = np.floor((src[:, 0] - xbound[0]) / xbound[2]).astype(np.int64)
    j = np.floor((src[:, 1] - ybound[0]) / ybound[2]).astype(np.int64)
    valid = (i >= 0) & (i < nx) & (j >= 0) & (j < ny)
    out = np.zeros((c, nx * ny), masks.dtype)
    out[:, valid] = masks[:, i[valid], j[valid]]
    return out.reshape(c, nx, ny)
