"""Fused and classic pooling equal a float64 brute force; gradients pass gradcheck; out= and plan tensors."""
from __future__ import annotations

import pytest
import torch

import bev_pool
from bev_pool import BEVGrid, BEVPoolPlan, pool_fused, pool_points

from .conftest import brute_force_bev, materialize, random_geometry

SHAPE = (2, 3, 7, 4, 5)  # B, N, D, H, W


def _inputs(dtype, channels=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    batch, cams, depth, height, width = SHAPE
    depth_probs = torch.rand(batch, cams, depth, height, width, generator=generator, dtype=torch.float64)
    feats = torch.randn(batch, cams, channels, height, width, generator=generator, dtype=torch.float64)
    return depth_probs.to(dtype), feats.to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fused_and_classic_equal_brute_force_with_points_outside_grid(small_grid, dtype, tol):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    total = xyz[..., 0].numel()
    assert 0 < plan.num_points < total  # some points fall outside the grid
    depth_probs, feats = _inputs(dtype)
    expected = brute_force_bev(xyz, small_grid, materialize(depth_probs.double(), feats.double()))
    fused = pool_fused(plan, depth_probs, feats)
    classic = pool_points(plan, materialize(depth_probs, feats))
    size_x, size_y, size_z = small_grid.shape
    assert fused.shape == (SHAPE[0], size_z * feats.shape[2], size_x, size_y)
    assert fused.dtype == dtype and classic.dtype == dtype
    torch.testing.assert_close(fused.double(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(classic.double(), expected, rtol=tol, atol=tol)


def test_output_is_channels_last_with_z_major_channels(small_grid):
    """Channel z*C + c is channel c of height bin z; axis 2 is x, axis 3 is y."""
    batch, cams, depth, height, width = 1, 1, 1, 1, 1
    xyz = torch.tensor([2.2, -1.4, 1.5], dtype=torch.float64).view(1, 1, 1, 1, 1, 3)  # cell x=6, y=3, z=1
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    feats = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1)
    bev = pool_fused(plan, torch.full((batch, cams, depth, height, width), 0.5), feats)
    assert bev.is_contiguous(memory_format=torch.channels_last)
    nonzero = torch.nonzero(bev).tolist()
    assert nonzero == [[0, 3, 6, 3], [0, 4, 6, 3], [0, 5, 6, 3]]
    assert bev[0, 3:6, 6, 3].tolist() == [0.5, 1.0, 1.5]


def test_half_precision_inputs_accumulate_in_float32(small_grid):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    depth_probs, feats = _inputs(torch.float16)
    expected = brute_force_bev(xyz, small_grid, materialize(depth_probs.double(), feats.double()))
    bev = pool_fused(plan, depth_probs, feats)
    assert bev.dtype == torch.float16
    torch.testing.assert_close(bev.double(), expected, rtol=2e-3, atol=2e-2)


def test_fused_gradients_pass_gradcheck(small_grid):
    shape = (1, 2, 3, 2, 3)
    xyz = random_geometry(shape, small_grid, seed=3)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    generator = torch.Generator().manual_seed(4)
    depth_probs = torch.rand(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(1, 2, 3, 2, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, f: pool_fused(plan, d, f), (depth_probs, feats))


def test_classic_gradients_pass_gradcheck(small_grid):
    shape = (1, 2, 3, 2, 3)
    xyz = random_geometry(shape, small_grid, seed=5)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    point_feats = torch.randn(xyz[..., 0].numel(), 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: pool_points(plan, p), (point_feats,))


def test_gradient_only_for_inputs_that_need_it(small_grid):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    depth_probs, feats = _inputs(torch.float32)
    feats.requires_grad_(True)
    pool_fused(plan, depth_probs, feats).sum().backward()
    assert depth_probs.grad is None and feats.grad is not None
    # d(sum)/d(feats[pixel, c]) = sum of the pixel's in-grid depth probabilities
    inside = torch.zeros(depth_probs.numel())
    inside[plan.point_index] = 1.0
    expected = (depth_probs * inside.view_as(depth_probs)).sum(dim=2, keepdim=True).expand_as(feats)
    torch.testing.assert_close(feats.grad, expected, rtol=1e-5, atol=1e-5)


def test_out_buffer_is_reused_and_matches(small_grid):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    depth_probs, feats = _inputs(torch.float32)
    first = pool_fused(plan, depth_probs, feats)
    buffer = torch.full_like(first, 7.0)  # empty_like keeps channels-last; stale values must be overwritten
    again = pool_fused(plan, depth_probs, feats, out=buffer)
    assert again.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(again, first)
    with pytest.raises(ValueError, match="channels_last"):
        pool_fused(plan, depth_probs, feats, out=torch.zeros(first.shape))


def test_plan_round_trips_through_plain_tensors(small_grid):
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    tensors = plan.as_tensors()
    assert all(isinstance(value, torch.Tensor) and value.dtype == torch.int64 for value in tensors.values())
    rebuilt = BEVPoolPlan.from_tensors({name: value.clone() for name, value in tensors.items()})
    depth_probs, feats = _inputs(torch.float32)
    torch.testing.assert_close(pool_fused(rebuilt, depth_probs, feats), pool_fused(plan, depth_probs, feats))
    broken = dict(tensors)
    broken["pixel_index"] = tensors["pixel_index"] + 10_000
    with pytest.raises(ValueError, match="pixel_index out of range"):
        BEVPoolPlan.from_tensors(broken)
    shifted = dict(tensors)
    shifted["interval_lengths"] = tensors["interval_lengths"].clone()
    shifted["interval_lengths"][0] -= 1
    with pytest.raises(ValueError, match="do not match cell_offsets"):
        BEVPoolPlan.from_tensors(shifted)
    with pytest.raises(ValueError, match="missing"):
        BEVPoolPlan.from_tensors({"point_index": tensors["point_index"]})


def test_plan_stays_valid_across_frames(small_grid):
    """Same geometry, new depth/features every frame: the cached plan gives the brute-force answer."""
    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    for seed in (10, 11):
        depth_probs, feats = _inputs(torch.float64, seed=seed)
        expected = brute_force_bev(xyz, small_grid, materialize(depth_probs, feats))
        torch.testing.assert_close(pool_fused(plan, depth_probs, feats), expected)


def test_grid_shape_and_default_is_the_nuscenes_detection_grid():
    assert BEVGrid().shape == (360, 360, 1)
    assert BEVGrid(z_bound=(-10, 10, 5)).shape == (360, 360, 4)
    with pytest.raises(ValueError, match="whole number"):
        BEVGrid(x_bound=(-1.0, 1.0, 0.3))
    with pytest.raises(ValueError, match="upper > lower"):
        BEVGrid(y_bound=(1.0, -1.0, 0.5))


def test_package_is_standalone():
    import subprocess
    import sys
    code = ("import sys, bev_pool; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'bevfusion_ros')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__('pathlib').Path(
        bev_pool.__file__).resolve().parent.parent))


def test_cpu_pooling_reads_int32_bag_indices_made_once_per_plan(small_grid):
    from bev_pool.cpu import _bag_indices

    plan = BEVPoolPlan.from_geometry(random_geometry(SHAPE, small_grid), small_grid)
    first = _bag_indices(plan)
    assert [t.dtype for t in first] == [torch.int32, torch.int32]
    assert torch.equal(first[0].long(), plan.pixel_index) and torch.equal(first[1].long(), plan.cell_offsets)
    assert all(a is b for a, b in zip(first, _bag_indices(plan)))      # cached, not rebuilt per frame
    assert plan.pixel_index.dtype == torch.int64                         # the plan's own format is unchanged


def test_threads_sharing_one_plan_each_get_their_own_answer(small_grid):
    """The CPU path keeps per-frame scratch on the plan, one per thread: concurrent callers never mix."""
    from concurrent.futures import ThreadPoolExecutor

    xyz = random_geometry(SHAPE, small_grid)
    plan = BEVPoolPlan.from_geometry(xyz, small_grid)
    inputs = {seed: _inputs(torch.float64, seed=seed) for seed in (20, 21)}
    expected = {seed: brute_force_bev(xyz, small_grid, materialize(*pair)) for seed, pair in inputs.items()}

    def worst_error(seed: int) -> float:
        return max(float((pool_fused(plan, *inputs[seed]) - expected[seed]).abs().max()) for _ in range(50))

    with ThreadPoolExecutor(max_workers=2) as pool:
        errors = list(pool.map(worst_error, [20, 21]))
    assert max(errors) < 1e-12
    single = pool_fused(plan, *(t.float() for t in inputs[20]))          # other dtype, same plan: own scratch
    torch.testing.assert_close(single.double(), expected[20], atol=1e-5, rtol=1e-5)
