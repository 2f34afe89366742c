"""Ground plane of a LiDAR cloud (RANSAC + least squares): the box-derived labels' ground class and the
occlusion filter's notion of "off the ground" both use it."""
from __future__ import annotations

import numpy as np


def height_above(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Signed distance [N] of points to a plane (a, b, c, d) with unit normal (> 0 on the normal's side)."""
    return np.asarray(points, np.float64)[:, :3] @ plane[:3] + plane[3]


def fit_ground_plane(points: np.ndarray, iterations: int = 200, threshold: float = 0.15, seed: int = 0,
                     max_range: float = 30.0) -> np.ndarray:
    """RANSAC plane (a, b, c, d), unit normal pointing up (c > 0), ax + by + cz + d = 0, fitted to the
    lower part of the cloud near the sensor. Raises on a degenerate cloud."""
    xyz = np.asarray(points, np.float64)[:, :3]
    xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
    near = xyz[np.linalg.norm(xyz[:, :2], axis=1) < max_range]
    if len(near) < 50:
        raise ValueError(f"cannot fit a ground plane: only {len(near)} points within {max_range} m")
    low = near[near[:, 2] < np.percentile(near[:, 2], 40)]
    rng = np.random.default_rng(seed)
    best, best_inliers = None, -1
    for _ in range(iterations):
        sample = low[rng.choice(len(low), 3, replace=False)]
        normal = np.cross(sample[1] - sample[0], sample[2] - sample[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-6:
            continue
        normal /= norm
        if abs(normal[2]) < 0.9:      # ground is roughly horizontal in the LiDAR frame
            continue
        d = -normal @ sample[0]
        inliers = int((np.abs(low @ normal + d) < threshold).sum())
        if inliers > best_inliers:
            best, best_inliers = np.append(normal, d), inliers
    if best is None:
        raise ValueError("cannot fit a ground plane: no horizontal plane found")
    inl = low[np.abs(low @ best[:3] + best[3]) < threshold]
    centroid = inl.mean(0)
    _, eigvecs = np.linalg.eigh(np.cov((inl - centroid).T))
    normal = eigvecs[:, 0] if eigvecs[2, 0] > 0 else -eigvecs[:, 0]
    return np.append(normal, -normal @ centroid)
