"""Every sparse conv type equals torch's dense conv3d / conv_transpose3d on small random grids."""
from __future__ import annotations

import pytest
import torch

import sparse_conv as sc
from sparse_conv import functional

from sparse_conv.testing import dense_from, gather_sites, max_rel_err, random_sites, shuffled

SHAPE = (9, 8, 7)
BATCH = 2


def _inputs(seed: int, c_in: int = 3, density: float = 0.3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    coords = shuffled(random_sites(BATCH, SHAPE, density, gen), gen)
    feats = torch.randn(coords.shape[0], c_in, generator=gen, dtype=dtype)
    return coords, feats, gen


def _weight(gen, kernel, c_in, c_out, dtype=torch.float32):
    return torch.randn(*kernel, c_in, c_out, generator=gen, dtype=dtype)


def _torch_weight(weight):                       # ours [kx, ky, kz, Cin, Cout] -> conv3d [Cout, Cin, kx, ky, kz]
    return weight.permute(4, 3, 0, 1, 2).contiguous()


@pytest.mark.parametrize("kernel,dilation,with_bias", [
    ((3, 3, 3), 1, False), ((3, 3, 3), 1, True), ((3, 3, 3), 2, False), ((1, 1, 3), 1, False),
    ((5, 3, 1), (1, 2, 1), True)])
def test_submanifold_conv_equals_dense_conv3d_at_active_sites(kernel, dilation, with_bias):
    coords, feats, gen = _inputs(1)
    weight = _weight(gen, kernel, 3, 4)
    bias = torch.randn(4, generator=gen) if with_bias else None
    x = sc.SparseTensor(feats, coords, SHAPE, BATCH)
    out = functional.submanifold_conv3d(x, weight, bias, dilation)
    dil = (dilation,) * 3 if isinstance(dilation, int) else dilation
    pad = tuple((k // 2) * d for k, d in zip(kernel, dil))
    dense = torch.nn.functional.conv3d(dense_from(coords, feats, BATCH, SHAPE), _torch_weight(weight), bias,
                                       padding=pad, dilation=dil)
    assert torch.equal(out.coords, coords)
    assert max_rel_err(out.feats, gather_sites(dense, coords)) < 1e-5


@pytest.mark.parametrize("kernel,stride,padding,dilation,with_bias", [
    ((3, 3, 3), 2, 1, 1, False), ((3, 3, 3), 2, (1, 1, 0), 1, True), ((2, 2, 2), 2, 0, 1, False),
    ((3, 3, 3), 1, 0, 2, False), ((1, 1, 3), (1, 1, 2), 0, 1, False), ((3, 3, 3), 3, 1, 1, True)])
def test_strided_conv_equals_dense_conv3d_and_output_set_is_reached_sites(kernel, stride, padding, dilation,
                                                                          with_bias):
    coords, feats, gen = _inputs(2)
    weight = _weight(gen, kernel, 3, 5)
    bias = torch.randn(5, generator=gen) if with_bias else None
    x = sc.SparseTensor(feats, coords, SHAPE, BATCH)
    out = functional.strided_conv3d(x, weight, bias, stride, padding, dilation)
    conv = dict(stride=stride, padding=padding, dilation=dilation)
    dense = torch.nn.functional.conv3d(dense_from(coords, feats, BATCH, SHAPE), _torch_weight(weight), bias, **conv)
    reached = torch.nn.functional.conv3d(dense_from(coords, torch.ones(len(coords), 1), BATCH, SHAPE),
                                         torch.ones(1, 1, *kernel), None, **conv)
    assert tuple(dense.shape[2:]) == out.spatial_shape
    expected_sites = torch.nonzero(reached[:, 0] > 0)
    assert torch.equal(out.coords, expected_sites)          # sorted (b, x, y, z), exactly the reached sites
    assert max_rel_err(out.feats, gather_sites(dense, out.coords)) < 1e-5


@pytest.mark.parametrize("kernel,stride,padding,dilation,with_bias", [
    ((3, 3, 3), 2, 1, 1, False), ((2, 2, 2), 2, 0, 1, True), ((3, 3, 3), 1, 1, 2, False)])
def test_transposed_conv_equals_dense_conv_transpose3d(kernel, stride, padding, dilation, with_bias):
    coords, feats, gen = _inputs(3, density=0.15)
    weight = _weight(gen, kernel, 3, 4)
    bias = torch.randn(4, generator=gen) if with_bias else None
    x = sc.SparseTensor(feats, coords, SHAPE, BATCH)
    out = functional.transposed_conv3d(x, weight, bias, stride, padding, dilation)
    dense = torch.nn.functional.conv_transpose3d(dense_from(coords, feats, BATCH, SHAPE),
                                                 weight.permute(3, 4, 0, 1, 2).contiguous(), bias, stride=stride,
                                                 padding=padding, dilation=dilation)
    reached = torch.nn.functional.conv_transpose3d(dense_from(coords, torch.ones(len(coords), 1), BATCH, SHAPE),
                                                   torch.ones(1, 1, *kernel), None, stride=stride, padding=padding,
                                                   dilation=dilation)
    assert tuple(dense.shape[2:]) == out.spatial_shape
    assert torch.equal(out.coords, torch.nonzero(reached[:, 0] > 0))
    assert max_rel_err(out.feats, gather_sites(dense, out.coords)) < 1e-5


def test_inverse_conv_restores_the_strided_inputs_sites_like_dense_conv_transpose3d():
    coords, feats, gen = _inputs(4)
    down = _weight(gen, (3, 3, 3), 3, 4)
    up = _weight(gen, (3, 3, 3), 4, 2)
    x = sc.SparseTensor(feats, coords, SHAPE, BATCH)
    mid = functional.strided_conv3d(x, down, None, 2, 1, 1, indice_key="down1")
    out = functional.inverse_conv3d(mid, up, "down1")
    assert torch.equal(out.coords, coords) and out.spatial_shape == SHAPE
    dense = torch.nn.functional.conv_transpose3d(mid.dense(), up.permute(3, 4, 0, 1, 2).contiguous(), stride=2,
                                                 padding=1, output_padding=tuple((s + 1) % 2 for s in SHAPE))
    assert tuple(dense.shape[2:]) == SHAPE
    assert max_rel_err(out.feats, gather_sites(dense, coords)) < 1e-5


def test_modules_match_functional_and_kernel_maps_are_shared_along_the_network():
    coords, feats, gen = _inputs(5)
    net = sc.Sequential(sc.SubMConv3d(3, 8, 3), sc.BatchNorm(8), sc.ReLU(), sc.SubMConv3d(8, 8, 3),
                        sc.SparseConv3d(8, 8, 3, stride=2, padding=1), sc.SubMConv3d(8, 4, 3))
    x = sc.SparseTensor(feats, coords, SHAPE, BATCH)
    out = net(x)
    assert out.spatial_shape == (5, 4, 4) and out.stride == (2, 2, 2)
    assert len(x.cache) == 3                     # one subm map per grid + one strided map
    assert out.cache is x.cache


@pytest.mark.parametrize("mode", ["submanifold", "strided", "transposed"])
def test_gradients_pass_gradcheck_in_float64(mode):
    gen = torch.Generator().manual_seed(6)
    shape = (4, 4, 3)
    coords = shuffled(random_sites(2, shape, 0.4, gen), gen)
    feats = torch.randn(coords.shape[0], 2, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)

    def run(f, w, b):
        x = sc.SparseTensor(f, coords, shape, 2)
        if mode == "submanifold":
            return functional.submanifold_conv3d(x, w, b).feats
        if mode == "strided":
            return functional.strided_conv3d(x, w, b, 2, 1).feats
        return functional.transposed_conv3d(x, w, b, 2, 1).feats

    assert torch.autograd.gradcheck(run, (feats, weight, bias), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("mode", ["submanifold", "strided"])
def test_forward_is_bitwise_deterministic_per_thread_count_and_agrees_across_counts(mode):
    gen = torch.Generator().manual_seed(7)
    shape = (32, 32, 12)
    coords = shuffled(random_sites(1, shape, 0.4, gen), gen)
    feats = torch.randn(coords.shape[0], 16, generator=gen)
    weight = _weight(gen, (3, 3, 3), 16, 24)
    results: dict[int, list[torch.Tensor]] = {}
    for threads in (1, 2, 3, 2, 3):
        torch.set_num_threads(threads)
        x = sc.SparseTensor(feats, coords, shape, 1)
        if mode == "submanifold":
            out = functional.submanifold_conv3d(x, weight).feats
        else:
            out = functional.strided_conv3d(x, weight, None, 2, 1).feats
        results.setdefault(threads, []).append(out)
    assert torch.equal(results[2][0], results[2][1]) and torch.equal(results[3][0], results[3][1])
    assert max_rel_err(results[2][0], results[1][0]) < 1e-6 and max_rel_err(results[3][0], results[1][0]) < 1e-6


def test_training_forward_and_backward_with_worker_threads_match_one_thread():
    gen = torch.Generator().manual_seed(8)
    shape = (40, 40, 12)
    coords = random_sites(1, shape, 0.3, gen)
    feats = torch.randn(coords.shape[0], 8, generator=gen)
    weight = _weight(gen, (3, 3, 3), 8, 8)
    grads = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        w = weight.clone().requires_grad_(True)
        f = feats.clone().requires_grad_(True)
        x = sc.SparseTensor(f, coords, shape, 1)
        out = functional.strided_conv3d(functional.submanifold_conv3d(x, w), w, None, 2, 1)
        out.feats.square().sum().backward()
        grads.append((out.feats.detach(), w.grad, f.grad))
    for a, b in zip(*grads):
        assert max_rel_err(a, b) < 1e-5
