"""Training losses: CenterNet Gaussian focal loss, masked L1 box regression, attribute cross-entropy,
and BEVFusion's sigmoid focal loss for map segmentation."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from bevfusion_ros.model.config import ModelConfig


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg_weight = (1 - target).pow(4)
    pos_loss = -(pred.log() * (1 - pred).pow(2) * pos).sum()
    neg_loss = -((1 - pred).log() * pred.pow(2) * neg_weight * (1 - pos)).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def gather_at(feature: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """feature [B, C, X, Y], ind [B, K] (x * Y + y) -> [B, K, C]."""
    b, c = feature.shape[:2]
    flat = feature.reshape(b, c, -1)
    return flat.gather(2, ind[:, None, :].expand(-1, c, -1)).transpose(1, 2)


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float,
                       class_weights: Sequence[float] = ()) -> torch.Tensor:
    """Mean sigmoid focal loss over [B, C, ...]; ``class_weights`` (C numbers) scale each class's share."""
    logits = logits.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    if class_weights:
        shape = (1, len(class_weights)) + (1,) * (loss.dim() - 2)
        loss = loss * loss.new_tensor(list(class_weights)).reshape(shape)
    return loss.mean()


def compute_losses(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], config: ModelConfig
                   ) -> dict[str, torch.Tensor]:
    losses: dict[str, torch.Tensor] = {}
    det = config.detection
    if det.enabled:
        losses["heatmap"] = det.loss_weights.get("heatmap", 1.0) * gaussian_focal_loss(outputs["heatmap"],
                                                                                      batch["heatmap"])
        pred = torch.cat([outputs[k] for k in ("reg", "height", "dim", "rot", "vel")], dim=1)
        pred = gather_at(pred.float(), batch["ind"])                          # B, K, 10
        mask = batch["mask"][..., None]
        weights = pred.new_tensor(det.code_weights)
        l1 = (pred - batch["target"]).abs() * mask * weights
        losses["bbox"] = det.loss_weights.get("bbox", 0.25) * l1.sum() / mask.sum().clamp(min=1.0)
        attr_logits = gather_at(outputs["attr"].float(), batch["ind"])       # B, K, A
        valid = (batch["attr"] >= 0) & (batch["mask"] > 0)
        if valid.any():
            ce = F.cross_entropy(attr_logits[valid], batch["attr"][valid])
        else:
            ce = attr_logits.sum() * 0.0
        losses["attribute"] = det.loss_weights.get("attribute", 0.2) * ce
    if config.map.enabled:
        mc = config.map
        losses["map"] = mc.loss_weight * sigmoid_focal_loss(outputs["map"], batch["map"].float(),
                                                            mc.focal_alpha, mc.focal_gamma, mc.class_weights)
    losses["total"] = sum(losses.values())
    return losses
