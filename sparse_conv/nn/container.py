"""Containers and the residual basic block."""
from __future__ import annotations

from torch import nn

from ..tensor import SparseTensor
from .conv import SubMConv3d
from .norm import BatchNorm, ReLU


class Sequential(nn.Sequential):
    """nn.Sequential over SparseTensor-to-SparseTensor modules (spconv's SparseSequential)."""


class SparseBasicBlock(nn.Module):
    """SubM-BN-ReLU-SubM-BN + identity, ReLU (mmdet3d / BEVFusion SparseBasicBlock, same parameter names)."""

    def __init__(self, inplanes: int, planes: int, bn_eps: float = 1e-3, bn_momentum: float = 0.01,
                 indice_key=None) -> None:
        super().__init__()
        if inplanes != planes:
            raise ValueError(f"SparseBasicBlock without downsample needs inplanes == planes, got {inplanes}, {planes}")
        self.conv1 = SubMConv3d(inplanes, planes, 3, indice_key=indice_key)
        self.bn1 = BatchNorm(planes, eps=bn_eps, momentum=bn_momentum)
        self.conv2 = SubMConv3d(planes, planes, 3, indice_key=indice_key)
        self.bn2 = BatchNorm(planes, eps=bn_eps, momentum=bn_momentum)
        self.relu = ReLU()
        self.fused = False        # set by fuse_for_inference: BN folded, ReLU and residual in the convs

    def extra_repr(self) -> str:
        return "fused=True" if self.fused else ""

    def forward(self, x: SparseTensor) -> SparseTensor:
        identity = x.feats
        if self.fused:
            return self.conv2(self.conv1(x), residual=identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out.replace_feature(out.feats + identity))
