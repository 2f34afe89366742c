"""Bad inputs: zeros for an empty plan, a clear exception for everything else, never a crash."""
from __future__ import annotations

import pytest
import torch

from bev_pool import BEVGrid, BEVPoolPlan, pool_fused, pool_points

from .conftest import random_geometry

SHAPE = (1, 2, 4, 3, 5)


def _plan(grid, shape=SHAPE):
    return BEVPoolPlan.from_geometry(random_geometry(shape, grid), grid)


def _inputs(shape=SHAPE, channels=4, dtype=torch.float32):
    batch, cams, depth, height, width = shape
    return (torch.rand(batch, cams, depth, height, width, dtype=dtype),
            torch.randn(batch, cams, channels, height, width, dtype=dtype))


def test_empty_plan_gives_zeros(small_grid):
    far = torch.full((*SHAPE, 3), 1e4, dtype=torch.float64)  # every point outside the grid
    plan = BEVPoolPlan.from_geometry(far, small_grid)
    assert plan.num_points == 0
    depth_probs, feats = _inputs()
    bev = pool_fused(plan, depth_probs, feats)
    assert bev.shape == (1, 2 * 4, 8, 12) and not bev.any()
    assert not pool_points(plan, torch.randn(depth_probs.numel(), 4)).any()
    feats.requires_grad_(True)
    pool_fused(plan, depth_probs, feats).sum().backward()
    assert not feats.grad.any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_geometry_raises(small_grid, bad):
    xyz = random_geometry(SHAPE, small_grid)
    xyz[0, 1, 2, 0, 3, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        BEVPoolPlan.from_geometry(xyz, small_grid)


def test_wrong_geometry_rank_raises(small_grid):
    with pytest.raises(ValueError, match=r"\[B, N, D, H, W, 3\]"):
        BEVPoolPlan.from_geometry(torch.zeros(2, 3, 4, 3), small_grid)


def test_plan_used_with_another_geometry_shape_raises(small_grid):
    plan = _plan(small_grid)
    depth_probs, feats = _inputs(shape=(1, 2, 5, 3, 5))  # one more depth bin
    with pytest.raises(ValueError, match="rebuild the plan"):
        pool_fused(plan, depth_probs, feats)
    with pytest.raises(ValueError, match="rebuild the plan"):
        pool_points(plan, torch.randn(depth_probs.numel(), 4))


def test_feature_shape_mismatch_raises_naming_feats(small_grid):
    plan = _plan(small_grid)
    depth_probs, _ = _inputs()
    with pytest.raises(ValueError, match="feats must be"):
        pool_fused(plan, depth_probs, torch.randn(1, 2, 4, 3, 6))
    with pytest.raises(ValueError, match="feats must have 5 dimensions"):
        pool_fused(plan, depth_probs, torch.randn(2, 4, 3, 5))


def test_dtype_mismatch_raises_naming_both(small_grid):
    plan = _plan(small_grid)
    depth_probs, feats = _inputs()
    with pytest.raises(ValueError, match="depth_probs is torch.float64 but feats is torch.float32"):
        pool_fused(plan, depth_probs.double(), feats)
    with pytest.raises(ValueError, match="float16/bfloat16/float32/float64"):
        pool_fused(plan, depth_probs.int(), feats.int())


def test_device_mismatch_raises_naming_devices(small_grid):
    plan = _plan(small_grid).to("meta")
    depth_probs, feats = _inputs()
    with pytest.raises(ValueError, match="plan on meta"):
        pool_fused(plan, depth_probs, feats)
    with pytest.raises(ValueError, match="one device"):
        pool_points(plan, torch.randn(depth_probs.numel(), 4))


def test_cuda_tensors_without_cupy_raise_clearly(small_grid, monkeypatch):
    from bev_pool import cuda
    monkeypatch.setattr(cuda, "cupy", None)
    with pytest.raises(RuntimeError, match="CuPy"):
        cuda.require_cupy()


def test_out_for_training_is_refused(small_grid):
    plan = _plan(small_grid)
    depth_probs, feats = _inputs()
    out = pool_fused(plan, depth_probs, feats)
    with pytest.raises(ValueError, match="inference only"):
        pool_fused(plan, depth_probs, feats.requires_grad_(True), out=out)


def test_unknown_backend_raises(small_grid):
    plan = _plan(small_grid)
    depth_probs, feats = _inputs()
    with pytest.raises(ValueError, match="backend"):
        pool_fused(plan, depth_probs, feats, backend="fast")
