"""Kernel-map construction (coordinates -> per-offset input/output row pairs)."""
from .build import (build_strided_map, build_submanifold_map, build_transposed_map, conv_output_shape,
                    kernel_offsets, transposed_output_shape)
from .kernel_map import KernelMap
from .keys import KeyLayout, make_layout

__all__ = ["KernelMap", "KeyLayout", "make_layout", "build_submanifold_map", "build_strided_map",
           "build_transposed_map", "conv_output_shape", "transposed_output_shape", "kernel_offsets"]
