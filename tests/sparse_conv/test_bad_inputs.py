"""Bad inputs: a clear exception naming the problem, or a well-defined result."""
from __future__ import annotations

import pytest
import torch

import sparse_conv as sc
from sparse_conv import functional


def test_empty_input_gives_empty_outputs_through_every_conv_and_the_encoder():
    x = sc.SparseTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int64), (8, 8, 8), 1)
    w = torch.randn(3, 3, 3, 4, 6)
    assert functional.submanifold_conv3d(x, w).feats.shape == (0, 6)
    assert functional.strided_conv3d(x, w, None, 2, 1).feats.shape == (0, 6)
    assert functional.transposed_conv3d(x, w, None, 2, 1).feats.shape == (0, 6)
    enc = sc.SparseEncoder(in_channels=4, sparse_shape=(32, 32, 41), encoder_channels=((8, 8, 8), (8, 8, 8),
                           (8, 8, 8), (8, 8)), base_channels=8, output_channels=8)
    out = enc(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int32), 2)
    assert out.shape == enc.output_shape(2) and not out.any()


def test_duplicate_coordinates_raise_a_clear_error():
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2], [0, 1, 1, 1]])
    x = sc.SparseTensor(torch.randn(3, 2), coords, (4, 4, 4), 1)
    with pytest.raises(ValueError, match="duplicate"):
        functional.submanifold_conv3d(x, torch.randn(3, 3, 3, 2, 2))


@pytest.mark.parametrize("column,value,name", [(1, 4, "x"), (3, -1, "z"), (0, 1, "batch")])
def test_coordinates_out_of_range_raise_naming_the_axis(column, value, name):
    coords = torch.zeros(2, 4, dtype=torch.int64)
    coords[1, column] = value
    with pytest.raises(ValueError, match=f"coords {name} column"):
        sc.SparseTensor(torch.randn(2, 2), coords, (4, 4, 4), 1)


def test_mismatched_lengths_name_both_inputs():
    with pytest.raises(ValueError, match="feats has 3 rows but coords has 2"):
        sc.SparseTensor(torch.randn(3, 2), torch.zeros(2, 4, dtype=torch.int64), (4, 4, 4), 1)


def test_float_coordinates_and_nan_points():
    with pytest.raises(TypeError, match="integer"):
        sc.SparseTensor(torch.randn(1, 2), torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), (4, 4, 4), 1)
    points = torch.tensor([[0.5, 0.5, 0.5, 1.0], [float("nan"), 0.0, 0.0, 1.0], [0.1, float("inf"), 0.0, 1.0],
                           [0.6, 0.6, 0.6, 3.0], [9.0, 0.0, 0.0, 1.0]])
    feats, coords, num, stats = sc.voxelize(points, (1, 1, 1), (0, 0, 0, 4, 4, 4), 10, 100, return_stats=True)
    assert coords.tolist() == [[0, 0, 0]] and num.tolist() == [2]
    assert torch.allclose(feats, torch.tensor([[0.55, 0.55, 0.55, 2.0]]))
    assert stats["dropped_nonfinite"] == 2 and stats["dropped_out_of_range"] == 1


def test_overflow_scale_spatial_shapes_raise():
    with pytest.raises(OverflowError, match="2\\*\\*62"):
        sc.SparseTensor(torch.randn(1, 2), torch.zeros(1, 4, dtype=torch.int64), (2**21, 2**21, 2**21), 1)
    with pytest.raises(OverflowError):
        sc.voxelize(torch.zeros(1, 3), (1e-7, 1e-7, 1e-7), (-100, -100, -100, 100, 100, 100))


def test_wrong_channel_count_and_weight_shape_are_reported():
    x = sc.SparseTensor(torch.randn(2, 3), torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1]]), (4, 4, 4), 1)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        sc.SubMConv3d(4, 4)(x)
    with pytest.raises(ValueError, match="odd kernel"):
        functional.submanifold_conv3d(x, torch.randn(2, 2, 2, 3, 3))
