"""CUDA pooling kernels (CuPy RawModule), zero-copy with torch via DLPack. Import-safe without CuPy.

One thread handles ``V`` consecutive channels of one interval (the points of one BEV cell): it walks the
interval, loads the pixel's ``V`` channels with one vector load (``float4`` for fp32, 8 x fp16 = 16 bytes
for fp16), multiplies by the depth probability and accumulates in fp32 (FMA), then writes the cell's
``V`` output channels once. A 256-thread block covers ``256 / (C / V)`` consecutive intervals (one thread
block per interval range), so no two threads ever write the same output and no atomics are needed. The
depth x feature product is never materialized (the fused form of CUDA-BEVFusion). The classic form is the
same kernel with unit weights reading ``point_feats`` rows by frustum index. Backward passes use the torch
path (``embedding_bag`` on the GPU).

Kernels run on torch's current CUDA stream. fp32 and fp16 use the kernel; other dtypes fall back to the
torch path.
"""
from __future__ import annotations

import torch

from .plan import BEVPoolPlan

try:  # CuPy is optional: everything here is only needed for CUDA tensors
    import cupy  # type: ignore
except Exception as _error:  # noqa: BLE001 - ImportError, or a CuPy that cannot find its CUDA libraries
    cupy = None
    _IMPORT_ERROR: Exception | None = _error
else:
    _IMPORT_ERROR = None

THREADS_PER_BLOCK = 256

KERNEL_SOURCE = r"""
#include <cuda_fp16.h>

template <typename T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

template <typename T, int V> struct __align__(sizeof(T) * V) Vec { T v[V]; };

// out[cells[i], lane*V : lane*V+V] = sum_{k in interval i} weight(k) * table[row(k), lane*V : lane*V+V]
// weight(k) = depth[point_index[k]] (WEIGHTED) or 1; row(k) = row_index[k].
template <typename T, int V, bool WEIGHTED>
__global__ void bev_pool_intervals(const T* __restrict__ table, const T* __restrict__ depth,
                                   const long long* __restrict__ point_index,
                                   const long long* __restrict__ row_index,
                                   const long long* __restrict__ starts, const long long* __restrict__ lengths,
                                   const long long* __restrict__ cells, T* __restrict__ out,
                                   long long intervals, int channels) {
  const int lanes = channels / V;
  const long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long interval = thread / lanes;
  if (interval >= intervals) return;
  const int lane = (int)(thread - interval * lanes);
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  const long long begin = starts[interval];
  const long long end = begin + lengths[interval];
  for (long long k = begin; k < end; ++k) {
    const float weight = WEIGHTED ? to_float<T>(depth[point_index[k]]) : 1.f;
    const Vec<T, V> values = *reinterpret_cast<const Vec<T, V>*>(table + row_index[k] * channels + lane * V);
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = fmaf(weight, to_float<T>(values.v[j]), acc[j]);
  }
  Vec<T, V> result;
#pragma unroll
  for (int j = 0; j < V; ++j) result.v[j] = from_float<T>(acc[j]);
  *reinterpret_cast<Vec<T, V>*>(out + cells[interval] * channels + lane * V) = result;
}
"""

_TYPE_NAMES = {torch.float32: "float", torch.float16: "__half"}
_VECTOR_WIDTHS = {torch.float32: (4, 2, 1), torch.float16: (8, 4, 2, 1)}
_MODULE = None


def available() -> bool:
    """Whether the CUDA kernels can run here (CuPy importable and a CUDA device present)."""
    return cupy is not None and torch.cuda.is_available()


def require_cupy() -> None:
    """Raise a clear error when CUDA tensors reach bev_pool but CuPy is missing."""
    if cupy is None:
        raise RuntimeError(
            "bev_pool: CUDA tensors need CuPy for the CUDA kernel, which failed to import "
            f"({_IMPORT_ERROR!r}); install cupy-cuda12x (or cupy-cuda11x), or pass backend='torch' to run the "
            "pooling with torch ops on the GPU")


def _kernel_name(dtype: torch.dtype, vector: int, weighted: bool) -> str:
    return f"bev_pool_intervals<{_TYPE_NAMES[dtype]}, {vector}, {'true' if weighted else 'false'}>"


def _module():
    global _MODULE
    if _MODULE is None:
        require_cupy()
        names = [_kernel_name(dtype, vector, weighted) for dtype, vectors in _VECTOR_WIDTHS.items()
                 for vector in vectors for weighted in (True, False)]
        _MODULE = cupy.RawModule(code=KERNEL_SOURCE, options=("--std=c++14",), name_expressions=names)
    return _MODULE


def _vector_width(tensor: torch.Tensor, channels: int, *others: torch.Tensor) -> int:
    element = tensor.element_size()
    for vector in _VECTOR_WIDTHS[tensor.dtype]:
        aligned = all(t.data_ptr() % (element * vector) == 0 for t in (tensor, *others))
        if channels % vector == 0 and aligned:
            return vector
    return 1


def _as_cupy(tensor: torch.Tensor):
    return cupy.from_dlpack(tensor)


def _launch(table: torch.Tensor, depth: torch.Tensor | None, plan: BEVPoolPlan, row_index: torch.Tensor,
            out_flat: torch.Tensor) -> None:
    channels = table.shape[1]
    intervals = plan.interval_cells.numel()
    out_flat.zero_()
    if intervals == 0:
        return
    vector = _vector_width(table, channels, out_flat)
    lanes = channels // vector
    blocks = (intervals * lanes + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kernel = _module().get_function(_kernel_name(table.dtype, vector, depth is not None))
    weights = depth if depth is not None else table  # unused when unweighted
    args = tuple(_as_cupy(t) for t in (table, weights, plan.point_index, row_index, plan.interval_starts,
                                        plan.interval_lengths, plan.interval_cells, out_flat))
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(table.device).cuda_stream)
    with cupy.cuda.Device(table.device.index), stream:
        kernel((blocks,), (THREADS_PER_BLOCK,), args + (cupy.int64(intervals), cupy.int32(channels)))


def fused_forward(plan: BEVPoolPlan, depth_probs: torch.Tensor, feats: torch.Tensor, out_flat: torch.Tensor) -> None:
    """Fused pooling into ``out_flat [cells, C]`` on the GPU (fp16/fp32 kernel; others via torch)."""
    if feats.dtype not in _TYPE_NAMES:
        from . import cpu
        cpu.fused_forward(plan, depth_probs, feats, out_flat)
        return
    channels = feats.shape[2]
    table = feats.permute(0, 1, 4, 3, 2).reshape(-1, channels).contiguous()  # row = plan.pixel_index
    _launch(table, depth_probs.contiguous().view(-1), plan, plan.pixel_index, out_flat)


def points_forward(plan: BEVPoolPlan, point_feats: torch.Tensor, out_flat: torch.Tensor) -> None:
    """Classic pooling of ``point_feats [P, C]`` into ``out_flat [cells, C]`` on the GPU."""
    if point_feats.dtype not in _TYPE_NAMES:
        from . import cpu
        cpu.points_forward(plan, point_feats, out_flat)
        return
    _launch(point_feats.contiguous(), None, plan, plan.point_index, out_flat)
