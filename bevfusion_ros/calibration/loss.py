"""The semantic alignment loss, batched over candidate extrinsics.

An :class:`AlignmentProblem` holds everything the loss needs for one unknown transform T (one camera's
``T_cam_lidar``, or a shared transform seen by several cameras through fixed left factors): the class-c
LiDAR points of each (frame, camera, class) *group*, the class-c image fields of that group at every pyramid
level, intrinsics and chance levels. :func:`alignment_loss` evaluates it for K candidates at once:

    loss_n(T) = (sum_{p visible} f_n(pi(K_n A_n T p)) + chance_n (D_n - V_n)) / D_n     V_n = #visible points
                D_n = max(V_n, max(1, rho N_n))                       rho = visible_floor (0.03)
    loss(T)   = (sum_n w_n sqrt(V_n) loss_n(T) + chance) / (sum_n w_n sqrt(V_n) + 1),   w_n = sqrt(N_n)

- ``f_n`` is read by bilinear ``grid_sample`` so the loss is differentiable in T (rotation and
  translation). "Visible" = in front of the camera (depth > MIN_DEPTH_M) and inside the image.
- Points out of view are not scored: each group's loss is the mean over its visible points, so a correct
  candidate is not penalized for the (many) selected points that legitimately fall outside the image, and
  the gradient is the plain mean of the visible points' gradients (V_n is piecewise constant).
- Groups are weighted by sqrt(selected points N_n x visible points V_n): a class with a handful of points
  in view cannot swing the loss, many-point classes (ground) count more without drowning thin classes
  (poles) that pin rotation. (Measured: dropping the sqrt(N_n) factor moved the real keyframe's loss
  minimum by 0.3-0.45 deg in yaw/pitch; on synthetic data it made no difference.)
- A visibility floor per group: while fewer than rho N_n of a group's points are in view, the missing ones
  up to that floor score the field's chance level (its mean: the value of a randomly placed point), and
  one pseudo-point at chance level overall: a candidate that pushes (nearly) everything out of view scores
  chance level, not an accidental low mean of a few points. Above the floor the group's loss is the plain
  mean. (Until 2026-12-03 each group had one chance pseudo-point, loss_n = (sum f + chance) / (V + 1):
  that rewards every extra point in view by ~chance / V^2, and with many small groups — one per box on the
  real keyframe — it moved the minimum: 0.73 deg / 17 cm there against 0.30 deg / 10 cm with the floor.)
- Two earlier variants were measured and rejected: scoring out-of-view points at chance level with a fixed
  denominator rewarded candidates that bring more points into view (matched points score ~0 < chance: the
  loss fell monotonically moving CAM_FRONT 0.5 m along its axis); weighting groups by their total rather
  than visible point count let a group with 1 of 100 points in view swing the loss by 0.01 (CAM_BACK_RIGHT
  barriers on the real sample), more than a 0.4 deg rotation error.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention

MIN_DEPTH_M = 0.3
PSEUDO_COUNT = 1.0


@dataclass
class AlignmentProblem:
    """Padded, per-group tensors for one unknown transform (float32, CPU or GPU)."""

    points: torch.Tensor             # [N, P, 3] LiDAR-frame points, padded
    point_weights: torch.Tensor      # [N, P] 1 for real points, 0 for padding
    intrinsics: torch.Tensor         # [N, 3, 3]
    image_sizes: torch.Tensor        # [N, 2] (width, height) in pixels
    left: torch.Tensor | None        # [N, 4, 4] fixed left factors (camera <- unknown), None = identity
    group_weights: torch.Tensor      # [N]
    fields: list[torch.Tensor]       # per level: [N, 1, h, w]
    chance: list[torch.Tensor]       # per level: [N]
    groups: list[tuple[int, str, int]] = field(default_factory=list)  # (frame index, camera, class)
    visible_floor: float = 0.03      # fraction of a group's points below which missing ones score chance

    @property
    def num_groups(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.point_weights.sum().item())

    def to(self, device: torch.device | str) -> "AlignmentProblem":
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return AlignmentProblem(move(self.points), move(self.point_weights), move(self.intrinsics),
                                move(self.image_sizes), move(self.left), move(self.group_weights),
                                [move(f) for f in self.fields], [move(c) for c in self.chance], self.groups,
                                self.visible_floor)


def _screen_matrices(problem: AlignmentProblem) -> torch.Tensor:
    """[N, 3, 3] S_n K_n: camera coordinates -> homogeneous normalized image coordinates (grid_sample's
    align_corners=False convention: x = -1 / +1 at the left / right image *edges*)."""
    width, height = problem.image_sizes[:, 0], problem.image_sizes[:, 1]
    screen = torch.zeros(problem.num_groups, 3, 3, dtype=problem.points.dtype, device=problem.points.device)
    screen[:, 0, 0] = 2.0 / width
    screen[:, 0, 2] = 1.0 / width - 1.0
    screen[:, 1, 1] = 2.0 / height
    screen[:, 1, 2] = 1.0 / height - 1.0
    screen[:, 2, 2] = 1.0
    return screen @ problem.intrinsics


def project(problem: AlignmentProblem, transforms: torch.Tensor, max_points: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized image coordinates [N, P, K, 2] (grid_sample convention, align_corners=False) and a
    visibility mask [N, P, K] of the problem's points under K candidate transforms [K, 4, 4].

    One batched GEMM per call: the per-(group, candidate) 3x4 matrix S K A T is built first (tiny), then
    applied to all points of the group for all candidates at once ([P, 3] @ [3, 3K])."""
    points = problem.points if max_points is None else problem.points[:, :max_points]
    num, count = points.shape[0], transforms.shape[0]
    transforms = transforms.to(points.dtype)
    full = transforms[None] if problem.left is None else problem.left[:, None] @ transforms[None]  # [N|1, K, 4, 4]
    mats = _screen_matrices(problem)[:, None] @ full[..., :3, :]                                  # [N, K, 3, 4]
    rot = mats[..., :3].permute(0, 3, 1, 2).reshape(num, 3, count * 3)                            # [N, 3, K*3]
    hom = (points @ rot).view(num, points.shape[1], count, 3) + mats[..., 3][:, None]            # [N, P, K, 3]
    depth = hom[..., 2]
    in_front = depth > MIN_DEPTH_M
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    grid = hom[..., :2] / safe_depth[..., None]
    visible = in_front & (grid.abs().amax(-1) <= 1.0)
    return grid, visible


def alignment_loss(problem: AlignmentProblem, transforms: torch.Tensor, level: int,
                   max_points: int | None = None, per_group: bool = False) -> torch.Tensor:
    """Loss [K] of K candidate transforms [K, 4, 4] at pyramid `level` (differentiable).

    ``max_points`` uses only the first P points of every group (groups are stored in random order, so
    this is a random subsample) for cheap coarse evaluation. ``per_group=True`` returns [N, K]."""
    grid, visible = project(problem, transforms, max_points)
    weights = problem.point_weights if max_points is None else problem.point_weights[:, :max_points]
    sampled = F.grid_sample(problem.fields[level], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[:, 0]                      # [N, P, K]
    chance = problem.chance[level][:, None].to(sampled.dtype)               # [N, 1]
    vis_w = visible * weights[:, :, None]                                   # [N, P, K]
    visible_count = vis_w.sum(1)                                            # [N, K]
    # Plain mean over the visible points, as long as at least visible_floor of the group's points are in
    # view (and at least one); below that, the missing ones up to the floor score chance.
    floor = (weights.sum(1, keepdim=True) * problem.visible_floor).clamp_min(1.0)     # [N, 1]
    denom = torch.maximum(visible_count, floor)
    group_loss = ((sampled * vis_w).sum(1) + chance * (denom - visible_count)) / denom
    if per_group:
        return group_loss
    weight = problem.group_weights[:, None] * visible_count.detach().sqrt()  # [N, K]
    prior = (problem.chance[level] * problem.group_weights).sum() / problem.group_weights.sum()
    return ((group_loss * weight).sum(0) + prior * PSEUDO_COUNT) / (weight.sum(0) + PSEUDO_COUNT)


def visible_fraction(problem: AlignmentProblem, transforms: torch.Tensor) -> torch.Tensor:
    """Fraction [K] of the problem's (real) points that project into the image under each candidate."""
    _, visible = project(problem, transforms)
    weights = problem.point_weights[:, :, None]
    return (visible * weights).sum((0, 1)) / weights.sum().clamp_min(1.0)
