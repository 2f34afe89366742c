"""A 32-beam spinning LiDAR (nuScenes' Velodyne HDL-32E) ray-cast against the flat ground and upright boxes.

Each sweep fires `azimuth_steps` columns of 32 beams (elevations -30.67..+10.67 deg, ring 0 the lowest, as
in nuScenes' ``.pcd.bin``). Rays are intersected with the ground plane z = 0 and with every box (slab test)
whose azimuth and elevation extent the ray can reach, all vectorized as (ray, box) pairs; the nearest hit
wins, which gives occlusion. Returns carry range noise, random dropout, a material-dependent intensity
(0..255 with noise, weaker with range and, on the ground, at grazing incidence) and the ring index.
All rays of a sweep leave from one pose: motion
during the 50 ms sweep is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bevfusion_ros.data.synth import semantics as sem
from bevfusion_ros.data.synth.ground import GroundRaster

GROUND_HIT = -2
NO_HIT = -1


@dataclass(frozen=True)
class LidarModel:
    elevations_deg: tuple[float, ...] = tuple(np.linspace(-30.67, 10.67, 32).round(4))
    azimuth_steps: int = 1084
    max_range: float = 100.0
    min_range: float = 1.0
    range_noise: float = 0.02          # metres, 1 sigma
    dropout: float = 0.02              # fraction of returns lost at random
    far_dropout: float = 0.25          # extra loss probability at max range (linear in range)

    def directions(self) -> np.ndarray:
        """Unit ray directions [azimuth_steps * 32, 3] in the sensor frame, index = column * 32 + ring."""
        el = np.radians(np.asarray(self.elevations_deg))
        az = 2 * np.pi * np.arange(self.azimuth_steps) / self.azimuth_steps
        cos_el = np.cos(el)[None, :]
        dirs = np.stack([np.cos(az)[:, None] * cos_el, np.sin(az)[:, None] * cos_el,
                         np.broadcast_to(np.sin(el)[None, :], (len(az), len(el)))], -1)
        return dirs.reshape(-1, 3)


@dataclass
class Sweep:
    points: np.ndarray      # [N, 5] float32 x, y, z, intensity, ring (sensor frame)
    labels: np.ndarray      # [N] uint8 lidarseg class


def _box_extents(boxes: np.ndarray, origin: np.ndarray, rot: np.ndarray, model: LidarModel):
    """Per box: first azimuth column, number of columns, first ring, number of rings (conservative)."""
    n = len(boxes)
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    lx, ly = sx * boxes[:, 3:4], sy * boxes[:, 4:5]
    corners = np.stack([boxes[:, 0:1] + c * lx - s * ly, boxes[:, 1:2] + s * lx + c * ly,
                        boxes[:, 2:3] + sz * boxes[:, 5:6]], -1)                 # B, 8, 3 world
    local = (corners - origin) @ rot                                             # sensor frame
    az = np.arctan2(local[..., 1], local[..., 0])
    centre = np.arctan2(*((boxes[:, :3] - origin) @ rot)[:, [1, 0]].T)
    delta = (az - centre[:, None] + np.pi) % (2 * np.pi) - np.pi
    lo, hi = centre + delta.min(1), centre + delta.max(1)
    # Horizontal distance range: from the sensor to the box footprint (0 if inside) to the farthest corner.
    rel = origin[None, :2] - boxes[:, :2]
    along = np.abs(c[:, 0] * rel[:, 0] + s[:, 0] * rel[:, 1]) - boxes[:, 3] / 2
    across = np.abs(-s[:, 0] * rel[:, 0] + c[:, 0] * rel[:, 1]) - boxes[:, 4] / 2
    d_min = np.hypot(np.maximum(along, 0), np.maximum(across, 0))
    d_max = np.hypot(local[..., 0], local[..., 1]).max(1)
    inside = d_min < 0.05
    step = 2 * np.pi / model.azimuth_steps
    col_lo = np.ceil(lo / step).astype(np.int64)
    n_cols = np.floor(hi / step).astype(np.int64) - col_lo + 1
    col_lo = np.where(inside, 0, col_lo)
    n_cols = np.where(inside, model.azimuth_steps, np.clip(n_cols, 0, model.azimuth_steps))
    z_lo, z_hi = local[..., 2].min(1), local[..., 2].max(1)
    el_hi = np.arctan2(z_hi, np.where(z_hi > 0, d_min, d_max))
    el_lo = np.arctan2(z_lo, np.where(z_lo > 0, d_max, d_min))
    elev = np.radians(np.asarray(model.elevations_deg))
    margin = np.radians(1.6)
    ring_lo = np.searchsorted(elev, el_lo - margin)
    ring_hi = np.searchsorted(elev, el_hi + margin)            # exclusive
    ring_lo = np.where(inside, 0, ring_lo)
    ring_hi = np.where(inside, len(elev), ring_hi)
    n_rings = np.clip(ring_hi - ring_lo, 0, None)
    return col_lo, n_cols, ring_lo, n_rings


def cast(model: LidarModel, dirs_sensor: np.ndarray, T_world_sensor: np.ndarray, boxes: np.ndarray,
         box_cls: np.ndarray, box_mat: np.ndarray, ground: GroundRaster, rng: np.random.Generator) -> Sweep:
    """One sweep. boxes [B, 7] world [x, y, z_centre, l, w, h, yaw] with their class and material [B]."""
    rot = T_world_sensor[:3, :3]
    origin = T_world_sensor[:3, 3]
    dirs = dirs_sensor @ rot.T
    n_rays = len(dirs)
    n_rings = len(model.elevations_deg)
    t_best = np.full(n_rays, np.inf)
    hit = np.full(n_rays, NO_HIT, np.int64)

    down = dirs[:, 2] < -1e-9
    t_ground = np.where(down, -origin[2] / np.where(down, dirs[:, 2], -1.0), np.inf)
    t_best = np.where(down, t_ground, t_best)
    hit[down] = GROUND_HIT

    if len(boxes):
        near = np.hypot(boxes[:, 0] - origin[0], boxes[:, 1] - origin[1]) - np.hypot(boxes[:, 3], boxes[:, 4]) / 2 \
            < model.max_range
        idx_near = np.nonzero(near)[0]
        sub = boxes[idx_near]
        col_lo, n_cols, ring_lo, n_ring = _box_extents(sub, origin, rot, model)
        per_box = n_cols * n_ring
        total = int(per_box.sum())
        if total:
            which = np.repeat(np.arange(len(sub)), per_box)
            offsets = np.concatenate([[0], np.cumsum(per_box)[:-1]])
            local = np.arange(total) - offsets[which]
            col = (col_lo[which] + local // n_ring[which]) % model.azimuth_steps
            ring = ring_lo[which] + local % n_ring[which]
            ray = col * n_rings + ring
            t_hit = _slab(sub, which, origin, dirs[ray])
            ok = np.isfinite(t_hit)
            ray, which, t_hit = ray[ok], which[ok], t_hit[ok]
            np.minimum.at(t_best, ray, t_hit)
            win = t_hit <= t_best[ray]
            hit[ray[win]] = idx_near[which[win]]

    rng_t = t_best
    valid = (rng_t >= model.min_range) & (rng_t <= model.max_range)
    p_drop = model.dropout + model.far_dropout * np.clip(rng_t / model.max_range, 0, 1) ** 2
    valid &= rng.random(n_rays) >= p_drop
    keep = np.nonzero(valid)[0]
    t_true = rng_t[keep]
    owner_box = hit[keep]
    labels = np.empty(len(keep), np.uint8)
    material = np.empty(len(keep), np.uint8)
    is_ground = owner_box == GROUND_HIT
    world = origin + dirs[keep] * t_true[:, None]
    if is_ground.any():
        labels[is_ground], material[is_ground] = ground.lookup(world[is_ground, :2])
    labels[~is_ground] = box_cls[owner_box[~is_ground]]
    material[~is_ground] = box_mat[owner_box[~is_ground]]

    t_noisy = t_true + rng.normal(0.0, model.range_noise, len(keep))
    xyz = dirs_sensor[keep] * t_noisy[:, None]
    mean, std = sem.MATERIAL_INTENSITY[material, 0], sem.MATERIAL_INTENSITY[material, 1]
    # Weaker returns at grazing incidence on the ground (|cos| of the ray to the ground normal).
    incidence = np.where(is_ground, 0.45 + 0.55 * np.sqrt(np.abs(dirs[keep, 2])), 1.0)
    intensity = (mean + std * rng.standard_normal(len(keep))) * (1.0 - 0.35 * t_true / model.max_range) * incidence
    intensity = np.clip(np.round(intensity), 0, 255)
    ring_idx = keep % n_rings
    points = np.concatenate([xyz, intensity[:, None], ring_idx[:, None]], 1).astype(np.float32)
    return Sweep(points=points, labels=labels)


def _slab(boxes: np.ndarray, which: np.ndarray, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Entry distance of each (ray, box) pair (inf where the ray misses or starts inside)."""
    b = boxes[which]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    rel = origin[None, :] - b[:, :3]
    ox = c * rel[:, 0] + s * rel[:, 1]
    oy = -s * rel[:, 0] + c * rel[:, 1]
    oz = rel[:, 2]
    dx = c * dirs[:, 0] + s * dirs[:, 1]
    dy = -s * dirs[:, 0] + c * dirs[:, 1]
    dz = dirs[:, 2]
    t_near = np.full(len(b), -np.inf)
    t_far = np.full(len(b), np.inf)
    for o, d, half in ((ox, dx, b[:, 3] / 2), (oy, dy, b[:, 4] / 2), (oz, dz, b[:, 5] / 2)):
        d_safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-half - o) / d_safe
        t2 = (half - o) / d_safe
        t_near = np.maximum(t_near, np.minimum(t1, t2))
        t_far = np.minimum(t_far, np.maximum(t1, t2))
    return np.where((t_far >= t_near) & (t_near > 0.0), t_near, np.inf)
