"""sparse_conv: sparse 3D convolution on PyTorch for BEVFusion's LiDAR encoder (standalone library).

See sparse_conv/README.md for the API, the design and measured numbers.
"""
from .encoder import SparseEncoder
from .fuse import fuse_for_inference
from .kmap import KernelMap
from .nn import (BatchNorm, Conv3d, ReLU, Sequential, SparseBasicBlock, SparseConv3d, SparseConvTranspose3d,
                 SparseInverseConv3d, SparseSequential, SubMConv3d)
from .tensor import KernelMapCache, SparseTensor
from .voxelize import batch_voxelize, grid_shape, voxelize, voxelize_dynamic
from .weights import load_spconv_state_dict

__all__ = ["SparseTensor", "KernelMapCache", "KernelMap", "voxelize", "voxelize_dynamic", "batch_voxelize",
           "grid_shape", "Conv3d", "SubMConv3d", "SparseConv3d", "SparseConvTranspose3d", "SparseInverseConv3d",
           "BatchNorm", "ReLU", "Sequential", "SparseSequential", "SparseBasicBlock", "SparseEncoder",
           "load_spconv_state_dict", "fuse_for_inference"]
