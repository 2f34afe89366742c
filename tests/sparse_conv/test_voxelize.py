"""Voxelization against a plain-Python reference (mmcv hard-voxelization semantics)."""
from __future__ import annotations

import math

import torch

import sparse_conv as sc

VOXEL = (0.5, 0.5, 1.0)
RANGE = (-2.0, -2.0, -1.0, 2.0, 2.0, 1.0)


def _reference(points, max_points, max_voxels):
    voxels: dict[tuple, list] = {}
    order = []
    for p in points.tolist():
        if not all(math.isfinite(v) for v in p):
            continue
        if not all(RANGE[d] <= p[d] < RANGE[d + 3] for d in range(3)):
            continue
        key = tuple(int(math.floor((p[d] - RANGE[d]) / VOXEL[d])) for d in range(3))
        if key not in voxels:
            if len(order) >= max_voxels:
                continue
            voxels[key] = []
            order.append(key)
        if len(voxels[key]) < max_points:
            voxels[key].append(p)
    feats = [[sum(col) / len(pts) for col in zip(*pts)] for pts in (voxels[k] for k in order)]
    return feats, order, [len(voxels[k]) for k in order]


def test_hard_voxelization_matches_reference_caps_order_and_mean():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(600, 4, generator=gen) * torch.tensor([5.0, 5.0, 3.0, 1.0]) - torch.tensor([2.5, 2.5, 1.5, 0])
    feats, coords, num = sc.voxelize(points, VOXEL, RANGE, max_points_per_voxel=3, max_voxels=40)
    ref_feats, ref_coords, ref_num = _reference(points, 3, 40)
    assert coords.tolist() == [list(c) for c in ref_coords]
    assert num.tolist() == ref_num
    assert torch.allclose(feats, torch.tensor(ref_feats), atol=1e-6)


def test_dynamic_voxelization_keeps_every_point_and_batches_carry_the_batch_column():
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(500, 4, generator=gen) * 4 - 2
    feats, coords, num, point_index = sc.voxelize_dynamic(points, VOXEL, RANGE, return_point_index=True)
    inside = (points[:, 2] >= -1) & (points[:, 2] < 1)
    assert int(num.sum()) == int(inside.sum()) and bool((point_index[~inside] == -1).all())
    for v in range(0, len(coords), 7):
        members = points[point_index == v]
        assert torch.allclose(feats[v], members.mean(0), atol=1e-6)
    batch_feats, batch_coords = sc.batch_voxelize([points, points[:100]], VOXEL, RANGE, 10, 1000)
    assert batch_coords.shape[1] == 4 and set(batch_coords[:, 0].tolist()) == {0, 1}
    assert batch_feats.shape[0] == batch_coords.shape[0]


def test_bevfusion_grid_shape():
    assert sc.grid_shape((0.075, 0.075, 0.2), (-54, -54, -5, 54, 54, 3)) == (1440, 1440, 40)


def test_cpu_assignment_equals_the_torch_ops_path_on_edges_nan_inf_and_both_dtypes():
    """CPU tensors are binned with numpy (faster on ~100k points), other devices with torch ops: the same
    points must land in the same voxels, with the same drop counts, including points exactly on the range
    bounds, on voxel borders, NaN / inf in any column and a sum that overflows."""
    from sparse_conv.voxelize import _assign_cpu, _assign_torch, _check_geometry, grid_shape

    vs, lo, hi = _check_geometry((0.3, 0.3, 0.2), (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0))
    grid = grid_shape(vs, lo + hi)
    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        points = (torch.rand(20000, 5, generator=gen, dtype=dtype) - 0.5) * torch.tensor(
            [120.0, 120.0, 10.0, 2.0, 1.0], dtype=dtype)
        points[:300, 0] = torch.tensor(lo[0], dtype=dtype)                 # on the lower bound: kept
        points[300:600, 1] = torch.tensor(hi[1], dtype=dtype)              # on the upper bound: dropped
        points[600:900, 0] = torch.arange(300, dtype=dtype) * 0.3 - 45.0   # on voxel borders
        points[900:950, 2] = float("nan")
        points[950:1000, 3] = float("inf")
        points[1000:1050, 4] = -float("inf")
        points[1050:1060, 3] = torch.finfo(dtype).max                      # finite, but the row sum overflows
        points[1050:1060, 4] = torch.finfo(dtype).max
        cpu, ops = _assign_cpu(points, vs, lo, hi, grid), _assign_torch(points, vs, lo, hi, grid)
        assert torch.equal(cpu[0], ops[0]) and torch.equal(cpu[1], ops[1])
        assert cpu[3] == ops[3] and cpu[3]["dropped_nonfinite"] >= 150
