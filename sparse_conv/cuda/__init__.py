"""CUDA path: CuPy kernels (fp16 with fp32 accumulation) and their CPU twins. Import-safe without CuPy."""
from .kernels import available, sparse_conv_fp16, sparse_conv_fp16_cpu_twin

__all__ = ["available", "sparse_conv_fp16", "sparse_conv_fp16_cpu_twin"]
