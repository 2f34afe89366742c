"""CUDA kernels against their CPU twins (the twins themselves are checked on CPU everywhere)."""
from __future__ import annotations

import pytest
import torch

import sparse_conv as sc
from sparse_conv import functional
from sparse_conv.cuda import kernels
from sparse_conv.testing import max_rel_err, random_sites


def _case(seed: int):
    gen = torch.Generator().manual_seed(seed)
    coords = random_sites(2, (10, 9, 8), 0.3, gen)
    feats = torch.randn(coords.shape[0], 16, generator=gen)
    weight = torch.randn(3, 3, 3, 16, 8, generator=gen) * 0.2
    x = sc.SparseTensor(feats, coords, (10, 9, 8), 2)
    out = functional.submanifold_conv3d(x, weight)
    kmap = next(iter(x.cache._maps.values()))[1]
    return feats, weight.reshape(27, 16, 8), kmap.neighbor_table(), out.feats


def test_cpu_twin_of_the_fp16_conv_kernel_matches_the_fp32_conv():
    feats, weight, table, expected = _case(0)
    twin = kernels.sparse_conv_fp16_cpu_twin(feats, weight, table)
    assert twin.dtype == torch.float16
    assert max_rel_err(twin.float(), expected) < 5e-3


@pytest.mark.skipif(not kernels.available(), reason="needs a CUDA GPU and CuPy")
def test_fp16_conv_kernel_matches_its_cpu_twin():
    feats, weight, table, _ = _case(1)
    got = kernels.sparse_conv_fp16(feats.cuda(), weight.cuda(), table.cuda()).cpu()
    twin = kernels.sparse_conv_fp16_cpu_twin(feats, weight, table)
    assert max_rel_err(got.float(), twin.float()) < 2e-3
