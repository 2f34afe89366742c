"""Stateless operations on SparseTensor (the modules in sparse_conv.nn are thin wrappers)."""
from .conv import (SparseConvFunction, apply_kernel_map, inverse_conv3d, strided_conv3d, submanifold_conv3d,
                   transposed_conv3d)

__all__ = ["SparseConvFunction", "apply_kernel_map", "submanifold_conv3d", "strided_conv3d",
           "transposed_conv3d", "inverse_conv3d"]
