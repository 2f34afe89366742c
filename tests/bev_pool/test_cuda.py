"""CPU and CUDA agree (fp32 and fp16, fused and classic, with gradients); skipped without a GPU and CuPy."""
from __future__ import annotations

import pytest
import torch

from bev_pool import BEVPoolPlan, cuda, pool_fused, pool_points

from .conftest import materialize, random_geometry

pytestmark = pytest.mark.skipif(not cuda.available(), reason="needs a CUDA device and CuPy")

SHAPE = (2, 3, 9, 4, 6)


@pytest.mark.parametrize("channels", [80, 6, 3])  # vectorized (8/4-wide) and scalar channel loads
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2)])
def test_cuda_kernel_matches_cpu(small_grid, channels, dtype, tol):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    generator = torch.Generator().manual_seed(0)
    depth_probs = torch.rand(*SHAPE, generator=generator)
    feats = torch.randn(SHAPE[0], SHAPE[1], channels, SHAPE[3], SHAPE[4], generator=generator)
    expected = pool_fused(plan, depth_probs.double(), feats.double())
    gpu_plan = plan.to("cuda")
    fused = pool_fused(gpu_plan, depth_probs.to("cuda", dtype), feats.to("cuda", dtype))
    classic = pool_points(gpu_plan, materialize(depth_probs, feats).to("cuda", dtype))
    torch.cuda.synchronize()
    assert fused.dtype == dtype
    torch.testing.assert_close(fused.cpu().double(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(classic.cpu().double(), expected, rtol=tol, atol=tol)
    via_torch = pool_fused(gpu_plan, depth_probs.to("cuda", dtype), feats.to("cuda", dtype), backend="torch")
    torch.testing.assert_close(via_torch.cpu().double(), expected, rtol=tol, atol=tol)


def test_cuda_gradients_match_cpu(small_grid):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    depth_probs = torch.rand(*SHAPE, requires_grad=True)
    feats = torch.randn(SHAPE[0], SHAPE[1], 8, SHAPE[3], SHAPE[4], requires_grad=True)
    weight = torch.randn(SHAPE[0], 8 * small_grid.shape[2], small_grid.shape[0], small_grid.shape[1])
    (pool_fused(plan, depth_probs, feats) * weight).sum().backward()
    depth_gpu = depth_probs.detach().cuda().requires_grad_(True)
    feats_gpu = feats.detach().cuda().requires_grad_(True)
    (pool_fused(plan.to("cuda"), depth_gpu, feats_gpu) * weight.cuda()).sum().backward()
    torch.testing.assert_close(depth_gpu.grad.cpu(), depth_probs.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats_gpu.grad.cpu(), feats.grad, rtol=1e-4, atol=1e-4)


def test_empty_plan_on_cuda_gives_zeros(small_grid):
    plan = BEVPoolPlan.from_geometry(torch.full((*SHAPE, 3), 1e4, dtype=torch.float64), small_grid).to("cuda")
    bev = pool_fused(plan, torch.rand(*SHAPE, device="cuda"), torch.randn(2, 3, 8, 4, 6, device="cuda"))
    assert not bev.any()
