"""Raw head outputs -> ``frame.Detections`` and ``frame.BEVMap`` (one sample of the batch).

Decoding: sigmoid heatmap, 3x3 max-pool peak picking, top-k over all classes, score threshold,
CenterPoint box decoding, class-aware circle NMS (centre distance < the class's radius suppresses the
lower score), attribute = argmax over the attributes the class may carry. Map: sigmoid probabilities.
"""
from __future__ import annotations

import numpy as np
import torch

from bevfusion_ros.classes import ATTRIBUTES, CLASS_ATTRIBUTES, DETECTION_CLASSES
from bevfusion_ros.frame import BEVMap, Detections
from bevfusion_ros.model.box_coder import BoxCoder
from bevfusion_ros.model.config import ModelConfig
from bevfusion_ros.model.maxpool import max_pool3x3
from bevfusion_ros.model.motion import point_velocities

# [n_classes, n_attributes] bool: which attributes a class may carry
_ALLOWED = np.array([[a in CLASS_ATTRIBUTES[c] for a in ATTRIBUTES] for c in DETECTION_CLASSES])


def circle_nms(centres: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Greedy NMS on BEV centre distance; returns kept indices sorted by score (descending)."""
    order = np.argsort(-scores, kind="stable")
    if radius <= 0 or len(order) <= 1:
        return order
    pts = centres[order]
    dist2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= dist2[i] < radius * radius
    return order[np.array(keep, dtype=np.int64)]


def align_heading_to_velocity(boxes: np.ndarray, min_speed: float) -> None:
    """Set (in place) the yaw of boxes [M, 9] moving at >= ``min_speed`` m/s to their direction of motion.

    Vehicles, cyclists and walkers move forwards; the sin/cos regression cannot tell a nearly symmetric
    box's front from its back and is a few degrees off on its axis; a measured velocity settles both.
    Static classes (cones, barriers) have ~zero velocity and stay as they are. ``min_speed <= 0``: off."""
    if min_speed <= 0 or len(boxes) == 0:
        return
    moving = np.hypot(boxes[:, 7], boxes[:, 8]) >= min_speed
    boxes[moving, 6] = np.arctan2(boxes[moving, 8], boxes[moving, 7])


class PostProcessor:
    def __init__(self, config: ModelConfig, score_threshold: float | None = None):
        self.config = config
        self.coder = BoxCoder(config)
        det = config.detection
        self.score_threshold = det.score_threshold if score_threshold is None else float(score_threshold)
        self.pre_max = det.pre_max_size
        self.post_max = det.post_max_size
        self.nms_radius = list(det.nms_radius)
        self.heading_from_velocity = float(det.heading_from_velocity)
        self.point_velocity = det.point_velocity

    @torch.no_grad()
    def detections(self, outputs: dict[str, torch.Tensor], index: int = 0,
                   points: torch.Tensor | np.ndarray | None = None) -> Detections:
        """Decoded boxes of sample ``index``. ``points`` (that sample's [N, 5] network input), when given and
        ``detection.point_velocity.enabled``, replaces the head's velocities by measured ones (motion.py)."""
        if "heatmap" not in outputs:
            return Detections.empty()
        heat = outputs["heatmap"][index].float().sigmoid()                   # C, X, Y
        n_cls, size_x, size_y = heat.shape
        peaks = max_pool3x3(heat, 1)                                          # 3x3 local maxima
        heat = heat * (peaks == heat)
        scores, flat = heat.reshape(-1).topk(min(self.pre_max, heat.numel()))
        keep = scores > self.score_threshold
        scores, flat = scores[keep], flat[keep]
        if len(scores) == 0:
            return Detections.empty()
        labels = flat // (size_x * size_y)
        pos = flat % (size_x * size_y)
        xs, ys = pos // size_y, pos % size_y

        def gather(name: str) -> torch.Tensor:
            return outputs[name][index].float().reshape(outputs[name].shape[1], -1)[:, pos].T

        boxes = self.coder.decode(xs, ys, gather("reg"), gather("height"), gather("dim"), gather("rot"),
                                  gather("vel")).cpu().numpy()
        attr_logits = gather("attr").cpu().numpy()
        scores_np, labels_np = scores.cpu().numpy(), labels.cpu().numpy()
        kept = []
        for cls in np.unique(labels_np):
            idx = np.nonzero(labels_np == cls)[0]
            order = circle_nms(boxes[idx, :2], scores_np[idx], self.nms_radius[int(cls)])
            kept.append(idx[order])
        sel = np.concatenate(kept)
        sel = sel[np.argsort(-scores_np[sel], kind="stable")][: self.post_max]
        boxes, scores_np, labels_np, attr_logits = boxes[sel], scores_np[sel], labels_np[sel], attr_logits[sel]
        if points is not None and self.point_velocity.enabled:
            pts = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
            boxes[:, 7:9] = point_velocities(pts, boxes, labels_np, self.point_velocity, scores_np).velocity
        align_heading_to_velocity(boxes, self.heading_from_velocity)
        allowed = _ALLOWED[labels_np]
        masked = np.where(allowed, attr_logits, -np.inf)
        attributes = np.where(allowed.any(1), masked.argmax(1), -1)
        return Detections(boxes.astype(np.float32), scores_np.astype(np.float32), labels_np.astype(np.int64),
                          attributes.astype(np.int64))

    @torch.no_grad()
    def bev_map(self, outputs: dict[str, torch.Tensor], index: int = 0) -> BEVMap | None:
        if "map" not in outputs:
            return None
        mc = self.config.map
        probs = outputs["map"][index].float().sigmoid().cpu().numpy().astype(np.float32)
        return BEVMap(probs=probs, resolution=float(mc.xbound[2]), x_min=float(mc.xbound[0]),
                      y_min=float(mc.ybound[0]))
