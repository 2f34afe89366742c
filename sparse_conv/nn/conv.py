"""Sparse convolution modules (thin wrappers over sparse_conv.functional)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import functional
from ..tensor import SparseTensor, _as_triple

CONV_MODES = ("submanifold", "strided", "transposed", "inverse")


class Conv3d(nn.Module):
    """Sparse 3D convolution.

    mode: "submanifold" (output sites = input sites, odd kernel, padding implied), "strided" (spconv
    SparseConv3d output set: every site reached), "transposed" (conv_transpose3d output set) or "inverse"
    (undo the strided conv registered under ``indice_key``).

    weight: [kx, ky, kz, Cin, Cout] (spconv 1.x layout; ``sparse_conv.load_spconv_state_dict`` maps spconv 2.x
    [Cout, kx, ky, kz, Cin]). ``fused_relu`` (set by ``fuse_for_inference``) applies ReLU in the epilogue.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 bias: bool = False, mode: str = "submanifold", indice_key: Optional[str] = None,
                 output_padding=0) -> None:
        super().__init__()
        if mode not in CONV_MODES:
            raise ValueError(f"mode must be one of {CONV_MODES}, got {mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _as_triple(kernel_size, "kernel_size")
        self.stride = _as_triple(stride, "stride")
        self.padding = _as_triple(padding, "padding")
        self.dilation = _as_triple(dilation, "dilation")
        self.output_padding = _as_triple(output_padding, "output_padding")
        self.mode = mode
        self.indice_key = indice_key
        if mode == "submanifold" and self.stride != (1, 1, 1):
            raise ValueError(f"a submanifold convolution has stride 1, got {self.stride}")
        if mode == "inverse" and indice_key is None:
            raise ValueError("an inverse convolution needs the indice_key of the strided conv it undoes")
        self.weight = nn.Parameter(torch.empty(*self.kernel_size, self.in_channels, self.out_channels))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.fused_relu = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -math.sqrt(3.0) * bound, math.sqrt(3.0) * bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, mode={self.mode}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"bias={self.bias is not None}")
        return text + (", fused_relu=True" if self.fused_relu else "")

    def forward(self, x: SparseTensor, residual: Optional[torch.Tensor] = None) -> SparseTensor:
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got feats with {x.feats.shape[1]}")
        if self.mode == "submanifold":
            return functional.submanifold_conv3d(x, self.weight, self.bias, self.dilation, residual,
                                                 self.fused_relu)
        if self.mode == "strided" and residual is None:
            return functional.strided_conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                             self.indice_key, self.fused_relu)
        if self.mode == "strided":
            out = functional.strided_conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                            self.indice_key)
        elif self.mode == "transposed":
            out = functional.transposed_conv3d(x, self.weight, self.bias, self.stride, self.padding,
                                               self.dilation, self.output_padding)
        else:
            out = functional.inverse_conv3d(x, self.weight, self.indice_key, self.bias)
        if residual is None and not self.fused_relu:
            return out
        feats = out.feats if residual is None else out.feats + residual
        return out.replace_feature(torch.relu(feats) if self.fused_relu else feats)


class SubMConv3d(Conv3d):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1, bias=False,
                 indice_key=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, "submanifold",
                         indice_key)


class SparseConv3d(Conv3d):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1, bias=False,
                 indice_key=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, "strided",
                         indice_key)


class SparseConvTranspose3d(Conv3d):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, dilation=1, bias=False,
                 output_padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, "transposed",
                         None, output_padding)


class SparseInverseConv3d(Conv3d):
    def __init__(self, in_channels, out_channels, kernel_size=3, indice_key=None, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, 1, 0, 1, bias, "inverse", indice_key)
