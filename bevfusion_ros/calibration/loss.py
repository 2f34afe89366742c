"""The semantic alignment loss, batched over candidate extrinsics.

An :class:`AlignmentProblem` holds everything the loss needs for one unknown transform T (one camera's
``T_cam_lidar``, or a shared transform seen by several cameras through fixed left factors): the class-c
LiDAR points of each (frame, camera, class) *group*, the class-c image fields of that group at every pyramid
level, intrinsics and chance levels. :func:`alignment_loss` evaluates it for K candidates at once:

    loss_n(T) = (sum_{p visible} f_n(pi(K_n A_n T p)) + chance_n * m_n) / (#visible + m_n)
    loss(T)   = sum_n w_n loss_n(T) / sum_n w_n,        m_n = SHRINK * #points_n + 1

- ``f_n`` is read by bilinear ``grid_sample`` so the loss is differentiable in T (rotation and
  translation). "Visible" = in front of the camera (depth > MIN_DEPTH_M) and inside the image.
- Points out of view are not scored: the loss is a mean over the visible points, so a correct candidate
  is not penalized for the (many) selected points that legitimately fall outside the image, and the
  gradient is the plain mean of the visible points' gradients. The mean is shrunk towards the field's
  chance level (its value for randomly placed points) by a small prior count m_n: a candidate that pushes
  (nearly) everything out of view scores chance level, not an accidental low mean of a few points. An
  earlier variant that scored out-of-view points at chance level with a fixed denominator was biased:
  at the true extrinsics matched points score ~0 < chance, so it rewarded candidates that bring more
  points into view (measured: loss fell monotonically when moving CAM_FRONT 0.5 m forward).
- groups are weighted by sqrt(point count): many-point classes (ground) count more than a handful of
  points, without drowning thin classes (poles) that pin rotation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812 - torch convention

MIN_DEPTH_M = 0.3
SHRINK = 0.05


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
                                [move(f) for f in self.fields], [move(c) for c in self.chance], self.groups)


def project(problem: AlignmentProblem, transforms: torch.Tensor, max_points: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized image coordinates [N, K, P, 2] (grid_sample convention, align_corners=False) and a
    visibility mask [N, K, P] of the problem's points under K candidate transforms [K, 4, 4]."""
    points = problem.points if max_points is None else problem.points[:, :max_points]
    transforms = transforms.to(points.dtype)
    if problem.left is not None:
        full = problem.left[:, None] @ transforms[None]                     # [N, K, 4, 4]
        cam = torch.einsum("nkij,npj->nkpi", full[..., :3, :3], points) + full[:, :, None, :3, 3]
    else:
        cam = torch.einsum("kij,npj->nkpi", transforms[:, :3, :3], points) + transforms[None, :, None, :3, 3]
    depth = cam[..., 2]
    in_front = depth > MIN_DEPTH_M
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    intr = problem.intrinsics[:, None, None]                                # [N, 1, 1, 3, 3]
    x = cam[..., 0] / safe_depth
    y = cam[..., 1] / safe_depth
    u = intr[..., 0, 0] * x + intr[..., 0, 1] * y + intr[..., 0, 2]
    v = intr[..., 1, 1] * y + intr[..., 1, 2]
    width = problem.image_sizes[:, 0, None, None]
    height = problem.image_sizes[:, 1, None, None]
    grid = torch.stack([(2.0 * u + 1.0) / width - 1.0, (2.0 * v + 1.0) / height - 1.0], -1)
    visible = in_front & (grid.abs() <= 1.0).all(-1)
    return grid, visible


def alignment_loss(problem: AlignmentProblem, transforms: torch.Tensor, level: int,
                   max_points: int | None = None, per_group: bool = False, shrink: float = SHRINK
                   ) -> torch.Tensor:
    """Loss [K] of K candidate transforms [K, 4, 4] at pyramid `level` (differentiable).

    ``max_points`` uses only the first P points of every group (groups are stored in random order, so
    this is a random subsample) for cheap coarse evaluation. ``per_group=True`` returns [N, K]."""
    grid, visible = project(problem, transforms, max_points)
    weights = problem.point_weights if max_points is None else problem.point_weights[:, :max_points]
    sampled = F.grid_sample(problem.fields[level], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)[:, 0]                      # [N, K, P]
    chance = problem.chance[level][:, None].to(sampled.dtype)
    vis_w = visible * weights[:, None]                                      # [N, K, P]
    total = weights.sum(-1)[:, None]                                        # [N, 1]
    prior_count = shrink * total + 1.0
    group_loss = ((sampled * vis_w).sum(-1) + chance * prior_count) / (vis_w.sum(-1) + prior_count)
    if per_group:
        return group_loss
    gw = problem.group_weights[:, None]
    return (group_loss * gw).sum(0) / gw.sum().clamp_min(1e-12)


def visible_fraction(problem: AlignmentProblem, transforms: torch.Tensor) -> torch.Tensor:
    """Fraction [K] of the problem's (real) points that project into the image under each candidate."""
    _, visible = project(problem, transforms)
    weights = problem.point_weights[:, None]
    return (visible * weights).sum((0, 2)) / weights.sum().clamp_min(1.0)
