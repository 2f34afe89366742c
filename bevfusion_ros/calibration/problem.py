"""Build an :class:`AlignmentProblem` from semantic frames: point selection, class groups, field pyramids.

Point selection is done once, around the prior: a LiDAR point is kept for a camera when, under the prior,
it lies in front of the camera within the field of view widened by the search's rotation range (plus a
margin). Points that could never enter the image for any candidate in the search range carry no
information and would only cost time. Within a group (frame, camera, class) points are shuffled with a
seeded generator and capped, so ``points[:, :P]`` is a random subsample for cheap coarse evaluation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from bevfusion_ros.calibration.fields import FieldLevel, class_fields
from bevfusion_ros.calibration.loss import MIN_DEPTH_M, AlignmentProblem
from bevfusion_ros.calibration.semantics import SemanticFrame


class CalibrationInputError(ValueError):
    """The frames cannot support a calibration (no overlap, no classes, NaN input, ...). The message is the
    reason reported to the user / on /diagnostics."""


@dataclass(frozen=True)
class ProblemOptions:
    levels: tuple[FieldLevel, ...]
    max_points_per_group: int = 1024
    min_points_per_group: int = 8
    min_pixels_per_class: int = 20
    fov_margin_deg: float = 15.0
    max_range_m: float = 80.0
    ignore_classes: tuple[int, ...] = ()
    occlusion_filter: bool = True
    seed: int = 0


def _candidate_points(points: np.ndarray, T_cam_lidar: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int],
                      margin_rad: float, max_range: float) -> np.ndarray:
    """Indices of points that can project into the image for rotations within `margin_rad` of the prior."""
    cam = points[:, :3].astype(np.float64) @ T_cam_lidar[:3, :3].T + T_cam_lidar[:3, 3]
    depth = cam[:, 2]
    width, height = size
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    # Angular extent of the image, widened by the margin, as tangent bounds on x/z and y/z.
    ang_x = np.arctan2(cam[:, 0], depth)
    ang_y = np.arctan2(cam[:, 1], depth)
    lo_x, hi_x = np.arctan((-0.5 - cx) / fx) - margin_rad, np.arctan((width - 0.5 - cx) / fx) + margin_rad
    lo_y, hi_y = np.arctan((-0.5 - cy) / fy) - margin_rad, np.arctan((height - 0.5 - cy) / fy) + margin_rad
    dist = np.linalg.norm(cam, axis=1)
    keep = ((depth > MIN_DEPTH_M) & (ang_x > lo_x) & (ang_x < hi_x) & (ang_y > lo_y) & (ang_y < hi_y)
            & (dist < max_range))
    return np.flatnonzero(keep)


def occluded_points(points: np.ndarray, T_cam_lidar: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int],
                    cells_across: int = 160, window: int = 5, rel_margin: float = 0.1, abs_margin: float = 0.3
                    ) -> np.ndarray:
    """Boolean [N]: points hidden from the camera behind nearer points (LiDAR-camera parallax: the LiDAR
    sees ground behind a car that the camera does not). Depth test on a coarse grid of image cells, in a
    horizontal window of cells (rows are left alone so a ground plane seen at grazing angles does not
    occlude itself). Evaluated under the prior: occlusion depends on the camera *position* and changes little
    within the search range."""
    xyz = points[:, :3].astype(np.float64)
    cam = xyz @ T_cam_lidar[:3, :3].T + T_cam_lidar[:3, 3]
    depth = cam[:, 2]
    width, height = size
    cell = max(1.0, width / cells_across)
    front = np.isfinite(depth) & (depth > MIN_DEPTH_M)
    uv = np.full((len(xyz), 2), -1e9)
    uv[front] = cam[front, :2] / depth[front, None] * [intrinsic[0, 0], intrinsic[1, 1]] + intrinsic[:2, 2]
    pad = 0.25
    cols = int(np.ceil(width * (1 + 2 * pad) / cell))
    rows = int(np.ceil(height * (1 + 2 * pad) / cell))
    cx = np.floor((uv[:, 0] + pad * width) / cell).astype(np.int64)
    cy = np.floor((uv[:, 1] + pad * height) / cell).astype(np.int64)
    inside = front & (cx >= 0) & (cx < cols) & (cy >= 0) & (cy < rows)
    grid = np.full((rows, cols), np.inf)
    np.minimum.at(grid, (cy[inside], cx[inside]), depth[inside])
    from scipy.ndimage import minimum_filter
    nearest = minimum_filter(grid, size=(1, window), mode="nearest")
    out = np.zeros(len(xyz), bool)
    out[inside] = depth[inside] > nearest[cy[inside], cx[inside]] * (1 + rel_margin) + abs_margin
    return out


def build_problem(frames: Sequence[SemanticFrame], cameras: Sequence[str], prior: dict[str, np.ndarray],
                  options: ProblemOptions, search_rot_rad: float,
                  left: dict[str, np.ndarray] | None = None) -> AlignmentProblem:
    """Problem for one unknown transform seen by `cameras` (one camera for per-camera calibration).

    ``prior[camera]`` is the prior T_cam_lidar used for point selection. ``left[camera]`` (optional) is the
    fixed factor A with T_cam_lidar = A @ T for a shared unknown T; None means T = T_cam_lidar."""
    rng = np.random.default_rng(options.seed)
    margin = search_rot_rad + np.radians(options.fov_margin_deg)
    cap = options.max_points_per_group
    rows: list[dict] = []
    reasons: list[str] = []
    for frame_index, frame in enumerate(frames):
        finite = np.all(np.isfinite(frame.points[:, :3]), axis=1)
        for name in cameras:
            cam = frame.cameras.get(name)
            if cam is None:
                reasons.append(f"frame {frame_index}: camera {name} missing")
                continue
            T = np.asarray(prior[name], np.float64)
            pts = frame.points[:, :3]
            if cam.lidar_motion is not None:
                pts = (pts.astype(np.float64) @ cam.lidar_motion[:3, :3].T + cam.lidar_motion[:3, 3]).astype(np.float32)
            idx = _candidate_points(pts, T, cam.intrinsic, cam.size, margin, options.max_range_m)
            idx = idx[finite[idx] & (frame.point_labels[idx] >= 0)]
            if options.occlusion_filter and idx.size:
                hidden = occluded_points(pts[finite], T, cam.intrinsic, cam.size)
                hidden_all = np.zeros(len(pts), bool)
                hidden_all[np.flatnonzero(finite)] = hidden
                idx = idx[~hidden_all[idx]]
            if idx.size == 0:
                reasons.append(f"frame {frame_index}: no labeled LiDAR points in front of {name}")
                continue
            labels = frame.point_labels[idx]
            classes, counts = np.unique(labels, return_counts=True)
            for cls, count in zip(classes.tolist(), counts.tolist()):
                if cls in options.ignore_classes or count < options.min_points_per_group:
                    continue
                mask = cam.labels == cls
                if int(mask.sum()) < options.min_pixels_per_class:
                    continue
                members = idx[labels == cls]
                members = members[rng.permutation(members.size)][:cap]
                rows.append({"frame": frame_index, "camera": name, "cls": int(cls),
                             "points": pts[members], "mask": mask, "cam": cam})
    if not rows:
        detail = "; ".join(reasons[:3]) if reasons else "no class has both LiDAR points and image pixels"
        raise CalibrationInputError(
            f"no usable (frame, camera, class) group for {', '.join(cameras)}: {detail} — the frames have "
            "no semantic overlap between LiDAR and image")
    num = len(rows)
    pmax = max(len(r["points"]) for r in rows)
    points = np.zeros((num, pmax, 3), np.float32)
    weights = np.zeros((num, pmax), np.float32)
    intr = np.zeros((num, 3, 3), np.float32)
    sizes = np.zeros((num, 2), np.float32)
    for n, row in enumerate(rows):
        count = len(row["points"])
        points[n, :count] = row["points"]
        weights[n, :count] = 1.0
        intr[n] = row["cam"].intrinsic
        sizes[n] = row["cam"].size
    per_row = [class_fields(row["mask"], options.levels) for row in rows]   # [group][level] -> (field, mean)
    fields, chance = [], []
    for index, _level in enumerate(options.levels):
        level_fields = [per_row[n][index][0] for n in range(num)]
        shape = max(f.shape for f in level_fields)
        level_fields = [f if f.shape == shape else cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
                        for f in level_fields]
        fields.append(torch.from_numpy(np.stack(level_fields)[:, None]))
        chance.append(torch.tensor([per_row[n][index][1] for n in range(num)], dtype=torch.float32))
    left_t = None
    if left is not None:
        left_t = torch.from_numpy(np.stack([left[r["camera"]] for r in rows]).astype(np.float32))
    counts = weights.sum(1)
    return AlignmentProblem(
        points=torch.from_numpy(points), point_weights=torch.from_numpy(weights),
        intrinsics=torch.from_numpy(intr), image_sizes=torch.from_numpy(sizes), left=left_t,
        group_weights=torch.from_numpy(np.sqrt(counts).astype(np.float32)), fields=fields, chance=chance,
        groups=[(r["frame"], r["camera"], r["cls"]) for r in rows])
