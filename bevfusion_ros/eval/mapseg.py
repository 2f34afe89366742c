"""BEV map-segmentation IoU with BEVFusion's protocol.

For every class and every threshold t in 0.35, 0.40, ..., 0.65 a cell is predicted positive when
``prob >= t``; true positives, false positives and false negatives are summed over the whole dataset (not
averaged per frame), ``IoU(c, t) = TP / (TP + FP + FN)``; a class's IoU is the max over thresholds and
the mean IoU is the mean of those maxima over classes (mmdet3d-BEVFusion ``evaluate_map``). A class with
neither GT nor predictions anywhere scores 0 in the mean, as in BEVFusion; ``miou_present`` (mean over
classes that have GT) is reported beside it for datasets without some classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bevfusion_ros.classes import MAP_CLASSES

THRESHOLDS: tuple[float, ...] = (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65)
EPS = 1e-7


class MapSegAccumulator:
    """Accumulates per-class, per-threshold TP/FP/FN over a dataset."""

    def __init__(self, classes: Sequence[str] = MAP_CLASSES, thresholds: Sequence[float] = THRESHOLDS):
        self.classes = tuple(classes)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        shape = (len(self.classes), len(self.thresholds))
        self.tp = np.zeros(shape, np.int64)
        self.fp = np.zeros(shape, np.int64)
        self.fn = np.zeros(shape, np.int64)
        self.frames = 0

    def update(self, probs: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one frame: ``probs`` [C, X, Y] in [0, 1], ``gt`` [C, X, Y] (bool/0-1), optional ``valid``
        [X, Y] mask of cells to score."""
        probs = np.asarray(probs, dtype=np.float32)
        gt = np.asarray(gt).astype(bool)
        n = len(self.classes)
        if probs.shape != gt.shape or probs.ndim != 3 or probs.shape[0] != n:
            raise ValueError(f"map probs {probs.shape} and GT {gt.shape} must both be [{n}, X, Y]")
        if not np.all(np.isfinite(probs)):
            raise ValueError("map probabilities contain NaN/inf")
        probs = probs.reshape(n, -1)
        gt = gt.reshape(n, -1)
        if valid is not None:
            keep = np.asarray(valid, bool).reshape(-1)
            probs, gt = probs[:, keep], gt[:, keep]
        pred = probs[:, :, None] >= self.thresholds[None, None, :].astype(np.float32)   # C, P, T
        label = gt[:, :, None]
        self.tp += np.sum(pred & label, axis=1)
        self.fp += np.sum(pred & ~label, axis=1)
        self.fn += np.sum(~pred & label, axis=1)
        self.frames += 1

    def ious(self) -> np.ndarray:
        """IoU [C, T]."""
        return self.tp / (self.tp + self.fp + self.fn + EPS)

    def compute(self) -> dict:
        """``iou`` (per class, max over thresholds), ``miou``, ``miou_present``, ``iou_by_threshold`` and
        the best threshold per class."""
        ious = self.ious()
        best = ious.max(axis=1)
        present = (self.tp + self.fn)[:, 0] > 0
        return {
            "iou": {name: float(best[k]) for k, name in enumerate(self.classes)},
            "miou": float(best.mean()) if len(best) else 0.0,
            "miou_present": float(best[present].mean()) if present.any() else 0.0,
            "classes_with_gt": [name for k, name in enumerate(self.classes) if present[k]],
            "iou_by_threshold": {name: {f"{t:.2f}": float(ious[k, j]) for j, t in enumerate(self.thresholds)}
                                 for k, name in enumerate(self.classes)},
            "best_threshold": {name: float(self.thresholds[int(np.argmax(ious[k]))])
                               for k, name in enumerate(self.classes)},
            "frames": int(self.frames),
        }


def mapseg_iou(probs_list: Sequence[np.ndarray], gt_list: Sequence[np.ndarray],
               classes: Sequence[str] = MAP_CLASSES, thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """One-shot :class:`MapSegAccumulator` over paired frames."""
    acc = MapSegAccumulator(classes, thresholds)
    for probs, gt in zip(probs_list, gt_list, strict=True):
        acc.update(probs, gt)
    return acc.compute()


def resample_to_grid(probs: np.ndarray, src_bounds: tuple, dst_xbound: Sequence[float],
                     dst_ybound: Sequence[float]) -> np.ndarray:
    """Nearest-neighbour resample of a [C, X, Y] map on (x_min, y_min, resolution) onto another grid
    (e.g. a model whose map grid differs from the evaluation grid); cells outside become 0."""
    x_min, y_min, res = src_bounds
    probs = np.asarray(probs)
    nx = int(round((dst_xbound[1] - dst_xbound[0]) / dst_xbound[2]))
    ny = int(round((dst_ybound[1] - dst_ybound[0]) / dst_ybound[2]))
    xs = dst_xbound[0] + (np.arange(nx) + 0.5) * dst_xbound[2]
    ys = dst_ybound[0] + (np.arange(ny) + 0.5) * dst_ybound[2]
    ix = np.floor((xs - x_min) / res).astype(int)
    iy = np.floor((ys - y_min) / res).astype(int)
    okx = (ix >= 0) & (ix < probs.shape[1])
    oky = (iy >= 0) & (iy < probs.shape[2])
    out = np.zeros((probs.shape[0], nx, ny), probs.dtype)
    sub = probs[:, np.clip(ix, 0, probs.shape[1] - 1)][:, :, np.clip(iy, 0, probs.shape[2] - 1)]
    out[:] = sub * (okx[:, None] & oky[None, :])[None]
    return out
