"""Temporal fusion of the map head's output: a causal, decaying average of each cell's logits over the
frames of one drive, carried from frame to frame by the ego pose.

Why: the map classes are static and the car drives over them, but a single frame sees little of them (3
sweeps of a 32-beam LiDAR hit ~20 % of the 0.5 m cells within ±50 m; the tiny camera branch is blurry at
range). A cell seen well a few frames ago is still the same cell now. Averaging the logits of every frame
that saw a cell, with older frames weighted down by ``exp(-age / time_constant_s)``, keeps what earlier
frames saw (behind and beside the car) and evens out frame-to-frame noise; on validation scenes it raised map
mIoU 0.416 -> 0.476 with no retraining (models/README.md, "Map segmentation").

It is causal (only past and present frames), runs after the network on numpy and OpenCV (no torch: the
node's main process, which never imports torch, runs it; ~3 ms per 6 x 200 x 200 map), and needs only each
frame's LiDAR-to-global pose and stamp.

State per cell: the weighted logit sum ``S`` and weight sum ``W`` (fused logit = S / W). Each update warps
the previous (S, W) into the current grid (bilinear; cells the previous grid did not cover get W = 0),
decays both by ``d = exp(-dt / time_constant_s)`` and adds the current frame with weight 1:
``S = L + d * S_prev``, ``W = 1 + d * W_prev``. The history is dropped (and the current frame returned as
is) when the pose is missing or not finite, time does not move forward, the gap exceeds ``max_gap_s``, the
pose jumps faster than ``max_speed`` (a relocalization), or the grid changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from bevfusion_ros.frame import BEVMap
from bevfusion_ros.model.config import MapFusionConfig

_P_MIN = 1e-4   # |logit| <= 9.2: a saturated frame must not outvote every other frame for ever


def _logit(probs: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of p clipped to [_P_MIN, 1 - _P_MIN]; NaN counts as 0.5 (no evidence). OpenCV's
    vectorized log: numpy's took 1 ms of the 4 ms update on 6 x 200 x 200."""
    if not np.isfinite(probs.sum()):
        probs = np.nan_to_num(probs, nan=0.5, posinf=1.0, neginf=0.0)
    clipped = np.clip(probs, _P_MIN, 1 - _P_MIN)
    return cv2.log(clipped / (1 - clipped)).reshape(probs.shape)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + cv2.exp(-logits).reshape(logits.shape))).astype(np.float32, copy=False)


@dataclass
class _State:
    logit_sum: np.ndarray            # C x X x Y, float32: sum of decayed weights x logits
    weight: np.ndarray               # X x Y, float32: sum of decayed weights
    T_global_lidar: np.ndarray       # 4 x 4
    stamp_us: int
    grid: tuple                      # (C, X, Y, resolution, x_min, y_min)
    sequence: object


class TemporalMapFusion:
    """Feed it every frame's map, in time order, with the frame's ``T_global_lidar`` (LiDAR -> global, 4x4)
    and stamp; it returns the fused map on the same grid. ``sequence`` (e.g. a scene token) resets the
    history when it changes. ``resets`` counts the times history was dropped for a reason other than the
    first frame (for diagnostics)."""

    def __init__(self, config: MapFusionConfig):
        self.config = config
        self.resets = 0
        self.last_reset_reason = ""
        self._state: _State | None = None

    def update(self, bev_map: BEVMap | None, T_global_lidar: np.ndarray | None, stamp_us: int,
               sequence: object = None) -> BEVMap | None:
        if bev_map is None or not self.config.enabled:
            return bev_map
        logits = _logit(np.asarray(bev_map.probs, dtype=np.float32))
        grid = (*logits.shape, float(bev_map.resolution), float(bev_map.x_min), float(bev_map.y_min))
        pose = None if T_global_lidar is None else np.asarray(T_global_lidar, dtype=np.float64)
        reason = self._reset_reason(pose, int(stamp_us), grid, sequence)
        if reason:
            if self._state is not None:
                self.resets += 1
                self.last_reset_reason = reason
            weight = np.ones(logits.shape[1:], np.float32)
            logit_sum = logits
        else:
            state = self._state
            decay = math.exp(-(int(stamp_us) - state.stamp_us) * 1e-6 / self.config.time_constant_s)
            warped_sum, warped_weight = self._warp(state, pose, grid)
            logit_sum = logits + np.float32(decay) * warped_sum
            weight = 1.0 + np.float32(decay) * warped_weight
        # a frame without a usable pose starts nothing: the next one starts afresh
        self._state = None if reason == "no_pose" else _State(logit_sum, weight, pose, int(stamp_us), grid,
                                                              sequence)
        return replace(bev_map, probs=_sigmoid(logit_sum / weight[None]))

    # ------------------------------------------------------------------ internals

    def _reset_reason(self, pose: np.ndarray | None, stamp_us: int, grid: tuple, sequence: object) -> str:
        state = self._state
        if pose is None or pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            return "no_pose"
        if state is None:
            return "start"
        if sequence != state.sequence:
            return "new_sequence"
        if grid != state.grid:
            return "grid_changed"
        dt = (stamp_us - state.stamp_us) * 1e-6
        if dt <= 0:
            return "time_not_forward"
        if dt > self.config.max_gap_s:
            return "gap"
        if np.linalg.norm(pose[:2, 3] - state.T_global_lidar[:2, 3]) > self.config.max_speed * dt:
            return "pose_jump"
        return ""

    @staticmethod
    def _warp(state: _State, pose: np.ndarray, grid: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(S, W) of the previous frame sampled at the current cells' centres (ground plane z = 0 of the
        current LiDAR frame), bilinear, zero outside the previous grid.

        Current cell (i, j) -> previous frame's fractional cell (fi, fj) is affine, so OpenCV's warpAffine
        does the sampling (1.3 ms for 7 x 200 x 200, against 17 ms for numpy gathers)."""
        channels, size_x, size_y, res, x_min, y_min = grid
        T = np.linalg.solve(state.T_global_lidar, pose)      # current LiDAR frame -> previous LiDAR frame
        a, b, c, d = T[0, 0], T[0, 1], T[1, 0], T[1, 1]
        # fi = a i + b j + ci, fj = c i + d j + cj  (cell centres x = x_min + (i + 0.5) res, likewise y)
        ci = 0.5 * (a + b) + (a * x_min + b * y_min + T[0, 3] - x_min) / res - 0.5
        cj = 0.5 * (c + d) + (c * x_min + d * y_min + T[1, 3] - y_min) / res - 0.5
        # OpenCV images are (row, column) = (i, j) and its map takes (column, row): column' = fj, row' = fi.
        inverse = np.array([[d, c, cj], [b, a, ci]], np.float64)
        out = np.empty((channels + 1, size_x, size_y), np.float32)
        for k, plane in enumerate((*state.logit_sum, state.weight)):
            cv2.warpAffine(plane, inverse, (size_y, size_x), dst=out[k],
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)
        return out[:-1], out[-1]
