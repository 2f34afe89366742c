"""Ground-truth targets of the CenterPoint head: Gaussian heatmaps, regression targets, attributes.

``build_targets`` works on numpy (it runs in data-loader workers and its output is cached with the
sample); the losses in ``losses.py`` consume the stacked tensors.
"""
from __future__ import annotations

import numpy as np

from bevfusion_ros.model.box_coder import CODE_SIZE, BoxCoder
from bevfusion_ros.model.config import ModelConfig


def gaussian_radius(height: float, width: float, min_overlap: float = 0.1) -> float:
    """CenterNet/CenterPoint's radius so a box shifted by it still overlaps the GT by ``min_overlap``."""
    a1 = 1
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-splat a Gaussian of the given radius at (cx, cy) into heatmap [X, Y] in place."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    r = np.arange(-radius, radius + 1)
    gauss = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    size_x, size_y = heatmap.shape
    left, right = min(cx, radius), min(size_x - cx, radius + 1)
    top, bottom = min(cy, radius), min(size_y - cy, radius + 1)
    region = heatmap[cx - left:cx + right, cy - top:cy + bottom]
    patch = gauss[radius - left:radius + right, radius - top:radius + bottom]
    if region.size and patch.size:
        np.maximum(region, patch, out=region)


def build_targets(boxes: np.ndarray, labels: np.ndarray, attributes: np.ndarray, config: ModelConfig
                  ) -> dict[str, np.ndarray]:
    """boxes [M, 9], labels [M] (class index), attributes [M] (index or -1) ->
    heatmap [n_cls, X, Y] float32, ind [K] int64 (x * Y + y), mask [K] float32, target [K, 10] float32,
    attr [K] int64 (-1 = none), with K = detection.max_objects."""
    coder = BoxCoder(config)
    det = config.detection
    n_cls = len(config.detection_classes)
    size_x, size_y = config.bev_size
    K = det.max_objects
    heatmap = np.zeros((n_cls, size_x, size_y), np.float32)
    ind = np.zeros(K, np.int64)
    mask = np.zeros(K, np.float32)
    target = np.zeros((K, CODE_SIZE), np.float32)
    attr = np.full(K, -1, np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    if len(boxes) == 0:
        return {"heatmap": heatmap, "ind": ind, "mask": mask, "target": target, "attr": attr}
    cells, inside = coder.cells_of(boxes)
    keep = np.nonzero(inside & (boxes[:, 3] > 0) & (boxes[:, 4] > 0))[0][:K]
    enc = coder.encode(boxes[keep], cells[keep])
    for k, (i, code) in enumerate(zip(keep, enc)):
        length, width = boxes[i, 3] / coder.cell_x, boxes[i, 4] / coder.cell_y
        radius = max(det.min_radius, int(gaussian_radius(length, width, det.gaussian_overlap)))
        cx, cy = int(cells[i, 0]), int(cells[i, 1])
        draw_gaussian(heatmap[int(labels[i])], cx, cy, radius)
        ind[k] = cx * size_y + cy
        mask[k] = 1.0
        target[k] = code
        attr[k] = int(attributes[i])
    return {"heatmap": heatmap, "ind": ind, "mask": mask, "target": target, "attr": attr}
