"""Gather-GEMM-scatter dataflow (CPU and CUDA through torch ops).

For every kernel offset k: ``out[out_idx_k] += feats[in_idx_k] @ weight[k]``. A submanifold map's centre
offset is the identity and becomes one dense ``feats @ weight[centre]`` that initialises the output (no
gather, no scatter). Offsets are applied in a fixed order and, within an offset, no output row is written
twice (see KernelMap), so results are bit-for-bit deterministic on CPU whatever the thread count: no float
atomics are involved.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..kmap.kernel_map import KernelMap


def conv_forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """feats [n_in, Cin], weight [K, Cin, Cout] -> [n_out, Cout]."""
    c_out = weight.shape[2]
    centre = kmap.identity_offset
    if centre is not None and kmap.n_in == kmap.n_out:
        out = torch.mm(feats, weight[centre])
    else:
        out = feats.new_zeros((kmap.n_out, c_out))
    for k in range(kmap.kernel_volume):
        if k == centre:
            continue
        start, stop = kmap.offsets_ptr[k], kmap.offsets_ptr[k + 1]
        if stop == start:
            continue
        gathered = feats.index_select(0, kmap.in_idx[start:stop])
        out.index_add_(0, kmap.out_idx[start:stop], torch.mm(gathered, weight[k]))
    if bias is not None:
        out += bias
    return out


def conv_backward(grad_out: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                  need_feats: bool, need_weight: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of conv_forward with respect to feats and weight."""
    centre = kmap.identity_offset
    grad_feats = grad_weight = None
    if need_feats:
        if centre is not None:
            grad_feats = torch.mm(grad_out, weight[centre].t())
        else:
            grad_feats = grad_out.new_zeros((kmap.n_in, weight.shape[1]))
    if need_weight:
        grad_weight = torch.zeros_like(weight)
        if centre is not None:
            grad_weight[centre] = torch.mm(feats.t(), grad_out)
    for k in range(kmap.kernel_volume):
        if k == centre:
            continue
        start, stop = kmap.offsets_ptr[k], kmap.offsets_ptr[k + 1]
        if stop == start:
            continue
        in_idx, out_idx = kmap.in_idx[start:stop], kmap.out_idx[start:stop]
        grad_rows = grad_out.index_select(0, out_idx)
        if need_feats:
            grad_feats.index_add_(0, in_idx, torch.mm(grad_rows, weight[k].t()))
        if need_weight:
            grad_weight[k] = torch.mm(feats.index_select(0, in_idx).t(), grad_rows)
    return grad_feats, grad_weight
