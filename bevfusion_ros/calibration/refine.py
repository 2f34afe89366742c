"""Gradient refinement: Adam on a batch of so(3) + translation increments, T_k = delta(w_k, v_k) @ T0_k.

All k starting points are optimized at once (one batched forward/backward per step; the candidates'
losses are independent, so the gradient of their sum is each one's own gradient). Each stage runs on one
field level with a cosine-decaying learning rate; rotation and translation have their own step sizes
(Adam's steps are ~lr in each coordinate's units: radians and metres). The stages go coarse to fine and
each restarts from the previous stage's result.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bevfusion_ros.calibration.lie import apply_increment


@dataclass(frozen=True)
class RefineStage:
    level: int
    iterations: int
    lr_rot_deg: float
    lr_trans_m: float
    max_points: int | None = None


def refine(loss_fn: Callable[[torch.Tensor, int, int | None], torch.Tensor], starts: torch.Tensor,
           stages: tuple[RefineStage, ...], final_fraction: float = 0.02) -> torch.Tensor:
    """Refined transforms [k, 4, 4] (float64) from starting transforms [k, 4, 4]."""
    current = starts.to(torch.float64)
    for stage in stages:
        if stage.iterations <= 0:
            continue
        params = torch.zeros(current.shape[0], 6, dtype=torch.float64, requires_grad=True)
        base_lr = torch.tensor([math.radians(stage.lr_rot_deg)] * 3 + [stage.lr_trans_m] * 3, dtype=torch.float64)
        adam = _Adam(params.shape)
        best_loss = torch.full((current.shape[0],), float("inf"), dtype=torch.float64)
        best = current.clone()
        for step in range(stage.iterations):
            # cosine decay from 1 to final_fraction
            factor = final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * step / stage.iterations))
            transforms = apply_increment(params, current)
            losses = loss_fn(transforms.float(), stage.level, stage.max_points)
            with torch.no_grad():
                better = losses.detach().double() < best_loss
                best_loss = torch.where(better, losses.detach().double(), best_loss)
                best[better] = transforms.detach()[better]
            (grad,) = torch.autograd.grad(losses.sum(), params)
            with torch.no_grad():
                params -= adam.step(grad, base_lr * factor)
        rot, trans = params[:, :3], params[:, 3:]
        with torch.no_grad():
            final = apply_increment(torch.cat([rot, trans], 1), current)
            final_loss = loss_fn(final.float(), stage.level, stage.max_points).double()
            better = final_loss < best_loss
            best[better] = final[better]
        current = best
    return current


class _Adam:
    """Plain Adam (Kingma & Ba) on one tensor with per-coordinate learning rates. Written out instead of
    torch.optim.Adam, whose first use imports torch._dynamo (~2 s on an idle machine, 20 s under load)."""

    def __init__(self, shape, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-12):
        self.m = torch.zeros(shape, dtype=torch.float64)
        self.v = torch.zeros(shape, dtype=torch.float64)
        self.beta1, self.beta2, self.eps, self.t = beta1, beta2, eps, 0

    def step(self, grad: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        self.t += 1
        self.m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        return lr * m_hat / (v_hat.sqrt() + self.eps)
