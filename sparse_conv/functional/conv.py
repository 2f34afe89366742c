"""Stateless sparse convolution: an autograd function over a kernel map and a dataflow."""
from __future__ import annotations

from typing import Optional

import torch

from ..kmap.build import build_strided_map, build_submanifold_map, build_transposed_map
from ..kmap.kernel_map import KernelMap
from ..tensor import SparseTensor, _as_triple
from . import gather_scatter


class SparseConvFunction(torch.autograd.Function):
    """out = sum_k scatter(gather(feats, in_k) @ weight[k], out_k) (+ bias)."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], kmap: KernelMap):
        ctx.kmap = kmap
        ctx.has_bias = bias is not None
        ctx.save_for_backward(feats, weight)
        return gather_scatter.conv_forward(feats, weight, kmap, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_feats, grad_weight = gather_scatter.conv_backward(
            grad_out, feats, weight, ctx.kmap, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_feats, grad_weight, grad_bias, None


def apply_kernel_map(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                     bias: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                     relu: bool = False) -> torch.Tensor:
    """relu?([n_in, Cin] x weight [K, Cin, Cout] through ``kmap`` + bias + residual) -> [n_out, Cout]."""
    if weight.dim() != 3 or weight.shape[0] != kmap.kernel_volume or weight.shape[1] != feats.shape[1]:
        raise ValueError(f"weight must be [K={kmap.kernel_volume}, Cin={feats.shape[1]}, Cout], got "
                         f"{tuple(weight.shape)}")
    if feats.shape[0] != kmap.n_in:
        raise ValueError(f"feats has {feats.shape[0]} rows but the kernel map expects {kmap.n_in}")
    if residual is not None and tuple(residual.shape) != (kmap.n_out, weight.shape[2]):
        raise ValueError(f"residual must be [{kmap.n_out}, {weight.shape[2]}], got {tuple(residual.shape)}")
    if torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad or (
            bias is not None and bias.requires_grad) or (residual is not None and residual.requires_grad)):
        out = SparseConvFunction.apply(feats, weight, bias, kmap)
        if residual is not None:
            out = out + residual
        return torch.relu(out) if relu else out
    return gather_scatter.conv_forward(feats, weight, kmap, bias, residual, relu)


def _flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """[kx, ky, kz, Cin, Cout] (or already [K, Cin, Cout]) -> [K, Cin, Cout]."""
    if weight.dim() == 5:
        return weight.reshape(-1, weight.shape[3], weight.shape[4])
    return weight


def submanifold_conv3d(x: SparseTensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       dilation=1, residual: Optional[torch.Tensor] = None, relu: bool = False) -> SparseTensor:
    """Submanifold convolution (output sites = input sites). weight: [kx, ky, kz, Cin, Cout]."""
    kernel = tuple(weight.shape[:3])
    dil = _as_triple(dilation, "dilation")
    kmap = x.cache.get_or_build(x.coords, ("subm", kernel, dil), lambda: build_submanifold_map(
        x.coords, x.batch_size, x.spatial_shape, kernel, dil))
    return x.replace_feature(apply_kernel_map(x.feats, _flat_weight(weight), kmap, bias, residual, relu))


def strided_conv3d(x: SparseTensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1,
                   padding=0, dilation=1, indice_key: Optional[str] = None, relu: bool = False) -> SparseTensor:
    """spconv ``SparseConv3d``: output sites are all sites any input reaches. weight: [kx, ky, kz, Cin, Cout]."""
    kernel = tuple(weight.shape[:3])
    st, pad, dil = (_as_triple(v, n) for v, n in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    out_coords, out_shape, kmap = x.cache.get_or_build(x.coords, ("conv", kernel, st, pad, dil), lambda: (
        build_strided_map(x.coords, x.batch_size, x.spatial_shape, kernel, st, pad, dil)))
    if indice_key is not None:
        x.cache.named[indice_key] = (x.coords, x.spatial_shape, x.stride, kmap)
    feats = apply_kernel_map(x.feats, _flat_weight(weight), kmap, bias, relu=relu)
    out_stride = tuple(a * b for a, b in zip(x.stride, st))
    return SparseTensor(feats, out_coords, out_shape, x.batch_size, out_stride, x.cache, validate=False)


def transposed_conv3d(x: SparseTensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride=1,
                      padding=0, dilation=1, output_padding=0) -> SparseTensor:
    """Sparse ``conv_transpose3d``: output sites are every ``c * stride - padding + k * dilation`` in range.

    weight: [kx, ky, kz, Cin, Cout]; ``weight[k]`` maps input c to output c * stride - padding + k * dilation,
    like torch's ``conv_transpose3d`` weight ``[Cin, Cout, kx, ky, kz]`` permuted to (kx, ky, kz, Cin, Cout).
    """
    kernel = tuple(weight.shape[:3])
    st, pad, dil, opad = (_as_triple(v, n) for v, n in ((stride, "stride"), (padding, "padding"),
                                                         (dilation, "dilation"), (output_padding, "output_padding")))
    out_coords, out_shape, kmap = x.cache.get_or_build(x.coords, ("transposed", kernel, st, pad, dil, opad), lambda: (
        build_transposed_map(x.coords, x.batch_size, x.spatial_shape, kernel, st, pad, dil, opad)))
    feats = apply_kernel_map(x.feats, _flat_weight(weight), kmap, bias)
    out_stride = tuple(max(a // b, 1) for a, b in zip(x.stride, st))
    return SparseTensor(feats, out_coords, out_shape, x.batch_size, out_stride, x.cache, validate=False)


def inverse_conv3d(x: SparseTensor, weight: torch.Tensor, indice_key: str,
                   bias: Optional[torch.Tensor] = None) -> SparseTensor:
    """spconv ``SparseInverseConv3d``: undo the strided conv registered under ``indice_key`` (its input sites
    become the output sites; pairs are that conv's pairs reversed)."""
    if indice_key not in x.cache.named:
        raise KeyError(f"no strided convolution registered under indice_key {indice_key!r} in this tensor's cache")
    coords, shape, stride, kmap = x.cache.named[indice_key]
    if kmap.n_out != len(x):
        raise ValueError(f"inverse conv {indice_key!r}: tensor has {len(x)} rows but the strided conv produced "
                         f"{kmap.n_out}")
    feats = apply_kernel_map(x.feats, _flat_weight(weight), kmap.transposed(), bias)
    return SparseTensor(feats, coords, shape, x.batch_size, stride, x.cache, validate=False)
