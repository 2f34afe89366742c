"""Sparse modules: convolutions, normalisation, activation, containers, residual block."""
from .container import Sequential, SparseBasicBlock
from .conv import Conv3d, SparseConv3d, SparseConvTranspose3d, SparseInverseConv3d, SubMConv3d
from .norm import BatchNorm, ReLU

SparseSequential = Sequential

__all__ = ["Conv3d", "SubMConv3d", "SparseConv3d", "SparseConvTranspose3d", "SparseInverseConv3d", "BatchNorm",
           "ReLU", "Sequential", "SparseSequential", "SparseBasicBlock"]
