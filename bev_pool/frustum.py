"""Frustum geometry: where each (camera, depth bin, feature pixel) point lies in the LiDAR frame.

This is LSS/BEVFusion's ``create_frustum`` + ``get_geometry`` with explicit, documented conventions:

- ``intrinsics [B, N, 3, 3]`` (or ``[..., 4, 4]``, top-left 3x3 used): the camera matrix of the *original*
  image, ``K @ p_cam = d * (u, v, 1)`` with ``u`` right, ``v`` down, in pixels of the original image.
- ``T_lidar_cam [B, N, 4, 4]``: maps points in the camera optical frame (z forward, x right, y down) into
  the LiDAR frame (``p_lidar = T_lidar_cam @ p_cam``, the project's ``T_a_b`` convention); this is
  BEVFusion's ``camera2lidar``. Fold any LiDAR-side (BEV) augmentation into it.
- ``image_aug [B, N, 3, 3]`` or ``None``: the homogeneous 2-D transform from original-image pixels to the
  network-input image pixels (resize, crop, flip, rotate): ``(u', v', 1) = image_aug @ (u, v, 1)``. A
  BEVFusion ``img_aug_matrix [.., 4, 4]`` (rotation in the top-left 2x2, translation in ``[:2, 3]``) is
  accepted too. It is undone here (LSS's ``post_rots`` / ``post_trans``). ``None`` means identity.
- ``image_size = (H_img, W_img)``: the network-input image size (after augmentation), e.g. (256, 704).
- ``feature_size = (H, W)``: the feature map the depth distribution and features live on, e.g. (32, 88).
  Feature column ``w`` sits at input-image x ``linspace(0, W_img - 1, W)[w]`` and row ``h`` at
  ``linspace(0, H_img - 1, H)[h]`` — BEVFusion's convention (kept so its checkpoints transfer).
- ``depth_bound = (lower, upper, step)``: depth bins ``arange(lower, upper, step)`` (D = 118 for
  (1, 60, 0.5)); depth is along the optical axis (camera z), not the ray length.

Returns ``[B, N, D, H, W, 3]`` xyz in the LiDAR frame, in the dtype of ``T_lidar_cam`` (computed in
float64 internally so the cell assignment does not depend on the input precision).
"""
from __future__ import annotations

import torch

Bound = tuple[float, float, float]


def depth_bins(depth_bound: Bound) -> torch.Tensor:
    """The depth-bin values ``arange(lower, upper, step)`` in float64 (BEVFusion's ``dbound``)."""
    lower, upper, step = (float(v) for v in depth_bound)
    if not (step > 0 and upper > lower):
        raise ValueError(f"depth_bound must be (lower, upper, step) with upper > lower, step > 0, got {depth_bound!r}")
    return torch.arange(lower, upper, step, dtype=torch.float64)


def _as_3x3(matrix: torch.Tensor, name: str, batch: tuple[int, int]) -> torch.Tensor:
    if matrix.dim() != 4 or tuple(matrix.shape[:2]) != batch or tuple(matrix.shape[2:]) not in ((3, 3), (4, 4)):
        raise ValueError(f"{name} must be [B, N, 3, 3] or [B, N, 4, 4] with B, N = {batch}, "
                         f"got {tuple(matrix.shape)}")
    return matrix


def frustum_points(intrinsics: torch.Tensor, T_lidar_cam: torch.Tensor, image_aug: torch.Tensor | None,
                   image_size: tuple[int, int] = (256, 704), feature_size: tuple[int, int] = (32, 88),
                   depth_bound: Bound = (1.0, 60.0, 0.5)) -> torch.Tensor:
    """Frustum point xyz ``[B, N, D, H, W, 3]`` in the LiDAR frame (see the module docstring)."""
    if T_lidar_cam.dim() != 4 or tuple(T_lidar_cam.shape[2:]) != (4, 4):
        raise ValueError(f"T_lidar_cam must be [B, N, 4, 4], got {tuple(T_lidar_cam.shape)}")
    batch = (int(T_lidar_cam.shape[0]), int(T_lidar_cam.shape[1]))
    device = T_lidar_cam.device
    intrinsics = _as_3x3(intrinsics, "intrinsics", batch)
    for name, tensor in (("intrinsics", intrinsics), ("T_lidar_cam", T_lidar_cam), ("image_aug", image_aug)):
        if tensor is None:
            continue
        if tensor.device != device:
            raise ValueError(f"{name} is on {tensor.device} but T_lidar_cam is on {device}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or inf")
    K = intrinsics[..., :3, :3].to(torch.float64)
    T = T_lidar_cam.to(torch.float64)
    if image_aug is None:
        aug = torch.eye(3, dtype=torch.float64, device=device).expand(*batch, 3, 3)
    else:
        image_aug = _as_3x3(image_aug, "image_aug", batch).to(torch.float64)
        if image_aug.shape[-1] == 4:  # BEVFusion img_aug_matrix: 2-D part in [:2, :2], translation in [:2, 3]
            aug = torch.zeros(*batch, 3, 3, dtype=torch.float64, device=device)
            aug[..., :2, :2] = image_aug[..., :2, :2]
            aug[..., :2, 2] = image_aug[..., :2, 3]
            aug[..., 2, 2] = 1.0
        else:
            aug = image_aug
    img_h, img_w = (int(v) for v in image_size)
    feat_h, feat_w = (int(v) for v in feature_size)
    if min(img_h, img_w, feat_h, feat_w) < 1:
        raise ValueError(f"image_size {image_size} and feature_size {feature_size} must be positive")
    depths = depth_bins(depth_bound).to(device)
    xs = torch.linspace(0, img_w - 1, feat_w, dtype=torch.float64, device=device)
    ys = torch.linspace(0, img_h - 1, feat_h, dtype=torch.float64, device=device)
    # Augmented-image pixel (u', v', 1) -> original-image pixel (u, v, w) via aug^-1, then -> camera ray.
    pix = torch.stack([xs.expand(feat_h, feat_w), ys[:, None].expand(feat_h, feat_w),
                       torch.ones(feat_h, feat_w, dtype=torch.float64, device=device)], dim=-1)  # [H, W, 3]
    try:
        to_ray = torch.linalg.inv(K) @ torch.linalg.inv(aug)  # [B, N, 3, 3]
    except RuntimeError as error:  # singular intrinsics or augmentation
        raise ValueError(f"intrinsics or image_aug is singular: {error}") from None
    rays = torch.einsum("bnij,hwj->bnhwi", to_ray, pix)
    rays = rays / rays[..., 2:3]  # camera-frame direction with unit optical-axis depth
    cam = rays[:, :, None] * depths[None, None, :, None, None, None]  # [B, N, D, H, W, 3]
    xyz = torch.einsum("bnij,bndhwj->bndhwi", T[..., :3, :3], cam) + T[..., None, None, None, :3, 3]
    out_dtype = T_lidar_cam.dtype if T_lidar_cam.is_floating_point() else torch.float32
    return xyz.to(out_dtype)


def nuscenes_image_aug(scale: float = 0.48, resized_size: tuple[int, int] = (432, 768),
                       final_size: tuple[int, int] = (256, 704)) -> torch.Tensor:
    """BEVFusion's test-time image transform as a 3x3 matrix: resize by ``scale`` then crop to
    ``final_size`` keeping the bottom rows and centring horizontally (1600x900 -> 768x432 -> 704x256)."""
    crop_top = resized_size[0] - final_size[0]
    crop_left = (resized_size[1] - final_size[1]) // 2
    return torch.tensor([[scale, 0.0, -crop_left], [0.0, scale, -crop_top], [0.0, 0.0, 1.0]], dtype=torch.float64)
