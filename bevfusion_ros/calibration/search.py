"""Loss-guided coarse search: batched evaluation of many candidate increments around the prior.

Round 0 draws a scrambled Sobol set of increments ``(w, v)`` over the whole search box (rotation vector
within ±rot_range per axis, translation within ±trans_range per axis) plus the prior itself, scores all of
them on the coarsest field level in batched tensor ops (chunks of candidates, never a Python loop per
candidate) and keeps the best few *distinct* ones (non-maximum suppression in increment space). Each later
round samples a shrunken box around every survivor on a finer level. The survivors of the last round seed
the gradient refinement.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bevfusion_ros.calibration.lie import apply_increment

LossFn = Callable[[torch.Tensor, int, int | None], torch.Tensor]   # (transforms [K,4,4], level, points) -> [K]


@dataclass(frozen=True)
class SearchRound:
    samples: int            # candidates drawn (round 0: in total; later rounds: per survivor)
    scale: float            # box half-width as a fraction of the full search range
    level: int              # field pyramid level
    max_points: int         # points per group used for scoring
    keep: int               # survivors


def evaluate_batched(loss_fn: LossFn, xis: torch.Tensor, bases: torch.Tensor, level: int, max_points: int,
                     chunk: int) -> torch.Tensor:
    """Loss [K] of increments xis [K, 6] applied to bases [K, 4, 4], in chunks of `chunk` candidates."""
    out = []
    with torch.no_grad():
        for start in range(0, xis.shape[0], chunk):
            transforms = apply_increment(xis[start:start + chunk], bases[start:start + chunk])
            out.append(loss_fn(transforms.float(), level, max_points))
    return torch.cat(out)


def distinct_top(xis: torch.Tensor, losses: torch.Tensor, keep: int, rot_radius: float, trans_radius: float
                 ) -> torch.Tensor:
    """Indices of the `keep` lowest losses such that no two kept increments are within the radii of each
    other in both rotation and translation (greedy non-maximum suppression)."""
    order = torch.argsort(losses)
    kept: list[int] = []
    for index in order.tolist():
        if not torch.isfinite(losses[index]):
            break
        ok = True
        for other in kept:
            d_rot = (xis[index, :3] - xis[other, :3]).abs().max()
            d_trans = (xis[index, 3:] - xis[other, 3:]).abs().max()
            if d_rot < rot_radius and d_trans < trans_radius:
                ok = False
                break
        if ok:
            kept.append(index)
            if len(kept) == keep:
                break
    return torch.tensor(kept, dtype=torch.long)


def coarse_search(loss_fn: LossFn, base: torch.Tensor, rot_range: float, trans_range: float,
                  rounds: tuple[SearchRound, ...], seed: int = 0, chunk: int = 256
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Run the search rounds around `base` [4, 4] (float64).

    Returns (transforms [k, 4, 4] float64 of the survivors, their losses [k] on the last round's level,
    number of candidates evaluated)."""
    base = base.to(torch.float64)
    ranges = torch.tensor([rot_range] * 3 + [trans_range] * 3, dtype=torch.float64)
    sobol = torch.quasirandom.SobolEngine(6, scramble=True, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    evaluated = 0
    # Round 0 over the whole box, the prior included.
    first = rounds[0]
    xis = (sobol.draw(first.samples, dtype=torch.float64) * 2.0 - 1.0) * ranges * first.scale
    xis = torch.cat([torch.zeros(1, 6, dtype=torch.float64), xis])
    bases = base.expand(xis.shape[0], 4, 4)
    losses = evaluate_batched(loss_fn, xis, bases, first.level, first.max_points, chunk)
    evaluated += xis.shape[0]
    keep = distinct_top(xis, losses, first.keep, rot_range * first.scale / 4, trans_range * first.scale / 4)
    current = apply_increment(xis[keep], bases[keep])             # survivors as absolute transforms
    current_losses = losses[keep]
    for rnd in rounds[1:]:
        count = current.shape[0]
        local = (torch.rand(count, rnd.samples, 6, generator=generator, dtype=torch.float64) * 2.0 - 1.0)
        local = local * ranges * rnd.scale
        local[:, 0] = 0.0                                          # each survivor itself competes again
        xis = local.reshape(-1, 6)
        bases = current[:, None].expand(count, rnd.samples, 4, 4).reshape(-1, 4, 4)
        losses = evaluate_batched(loss_fn, xis, bases, rnd.level, rnd.max_points, chunk)
        evaluated += xis.shape[0]
        absolute = apply_increment(xis, bases)
        # NMS on increments relative to the original base, so distinct survivors stay distinct.
        rel = torch.cat([_rotvec_rel(absolute, base), absolute[:, :3, 3] - base[:3, 3]], 1)
        keep = distinct_top(rel, losses, rnd.keep, rot_range * rnd.scale / 4, trans_range * rnd.scale / 4)
        current, current_losses = absolute[keep], losses[keep]
    return current, current_losses, evaluated


def _rotvec_rel(transforms: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    from bevfusion_ros.calibration.lie import so3_log
    return so3_log(transforms[:, :3, :3] @ base[:3, :3].T)
