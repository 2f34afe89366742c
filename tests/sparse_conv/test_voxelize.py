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
