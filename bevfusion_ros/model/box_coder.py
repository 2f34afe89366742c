"""CenterPoint box encoding on the BEV grid (axis 0 = x, axis 1 = y).

A box [x, y, z, l, w, h, yaw, vx, vy] (LiDAR frame) is assigned to the cell (i, j) that holds its
centre, and encoded as 10 regression targets:
``[(x - x0) / cell_x - i, (y - y0) / cell_y - j, z, log l, log w, log h, sin yaw, cos yaw, vx, vy]``.
"""
from __future__ import annotations

import numpy as np
import torch

from bevfusion_ros.model.config import ModelConfig

CODE_SIZE = 10


class BoxCoder:
    def __init__(self, config: ModelConfig):
        pcr = config.point_cloud_range
        self.x0, self.y0 = float(pcr[0]), float(pcr[1])
        self.cell_x, self.cell_y = config.bev_cell
        self.size_x, self.size_y = config.bev_size

    def cells_of(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer cells [M, 2] of box centres and a [M] mask of the boxes whose centre is on the grid."""
        fx = (boxes[:, 0] - self.x0) / self.cell_x
        fy = (boxes[:, 1] - self.y0) / self.cell_y
        cells = np.stack([np.floor(fx), np.floor(fy)], 1).astype(np.int64)
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < self.size_x) & (cells[:, 1] >= 0) & (cells[:, 1] < self.size_y)
        return cells, inside

    def encode(self, boxes: np.ndarray, cells: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
        out = np.zeros((len(boxes), CODE_SIZE), np.float32)
        out[:, 0] = (boxes[:, 0] - self.x0) / self.cell_x - cells[:, 0]
        out[:, 1] = (boxes[:, 1] - self.y0) / self.cell_y - cells[:, 1]
        out[:, 2] = boxes[:, 2]
        out[:, 3:6] = np.log(np.maximum(boxes[:, 3:6], 1e-3))
        out[:, 6] = np.sin(boxes[:, 6])
        out[:, 7] = np.cos(boxes[:, 6])
        out[:, 8:10] = boxes[:, 7:9]
        return out

    def decode(self, xs: torch.Tensor, ys: torch.Tensor, reg: torch.Tensor, height: torch.Tensor,
               dim: torch.Tensor, rot: torch.Tensor, vel: torch.Tensor) -> torch.Tensor:
        """Boxes [K, 9] from cell indices [K] and the raw head values gathered at them ([K, c] each)."""
        x = (xs.float() + reg[:, 0]) * self.cell_x + self.x0
        y = (ys.float() + reg[:, 1]) * self.cell_y + self.y0
        size = dim.clamp(max=5.0).exp()
        yaw = torch.atan2(rot[:, 0], rot[:, 1])
        return torch.stack([x, y, height[:, 0], size[:, 0], size[:, 1], size[:, 2], yaw, vel[:, 0], vel[:, 1]], 1)
