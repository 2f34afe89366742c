"""CuPy kernels for the CUDA path (fp16 storage, fp32 accumulation), each with a CPU twin.

Import-safe without CuPy or a GPU: ``available()`` says whether the kernels can run; the twins are plain
torch code that computes the same thing (same rounding points: fp16 inputs and weights, fp32 sums, fp16
output) and are what the tests compare the kernels against.

Kernel ``sparse_conv_fp16``: output-stationary sparse convolution over a neighbour table. One thread per
(output row, output channel) walks the K offsets and Cin input channels and accumulates in fp32; nothing is
written twice, so it needs no atomics and is deterministic.
"""
from __future__ import annotations

import torch

_SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__
void sparse_conv_fp16(const __half* __restrict__ feats, const __half* __restrict__ weight,
                      const long long* __restrict__ table, __half* __restrict__ out,
                      const long long n_out, const int volume, const int c_in, const int c_out) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= n_out * c_out) return;
    long long row = tid / c_out;
    int co = (int)(tid - row * c_out);
    float acc = 0.0f;
    for (int k = 0; k < volume; ++k) {
        long long src = table[row * volume + k];
        if (src < 0) continue;
        const __half* f = feats + src * c_in;
        const __half* w = weight + ((long long)k * c_in) * c_out + co;
        for (int ci = 0; ci < c_in; ++ci) {
            acc += __half2float(f[ci]) * __half2float(w[(long long)ci * c_out]);
        }
    }
    out[tid] = __float2half(acc);
}
"""

_KERNELS: dict = {}


def available() -> bool:
    """True when CuPy imports and a CUDA device is visible."""
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return False
    return True


def _kernel(name: str):
    if name not in _KERNELS:
        import cupy  # noqa: PLC0415
        _KERNELS[name] = cupy.RawKernel(_SOURCE, name)
    return _KERNELS[name]


def sparse_conv_fp16(feats: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """CUDA: feats [N, Cin] fp16, weight [K, Cin, Cout] fp16, table [M, K] int64 (-1 = none) -> [M, Cout] fp16."""
    import cupy  # noqa: PLC0415
    if not (feats.is_cuda and weight.is_cuda and table.is_cuda):
        raise ValueError("sparse_conv_fp16 needs CUDA tensors; use sparse_conv_fp16_cpu_twin on CPU")
    feats = feats.to(torch.float16).contiguous()
    weight = weight.to(torch.float16).contiguous()
    table = table.to(torch.int64).contiguous()
    n_out, volume = table.shape
    c_in, c_out = weight.shape[1], weight.shape[2]
    if weight.shape[0] != volume or feats.shape[1] != c_in:
        raise ValueError(f"shapes disagree: feats {tuple(feats.shape)}, weight {tuple(weight.shape)}, "
                         f"table {tuple(table.shape)}")
    out = torch.empty((n_out, c_out), dtype=torch.float16, device=feats.device)
    total = n_out * c_out
    if total == 0:
        return out
    threads = 256
    blocks = (total + threads - 1) // threads
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(feats.device).cuda_stream)
    with stream:
        _kernel("sparse_conv_fp16")((blocks,), (threads,), (
            feats.data_ptr(), weight.data_ptr(), table.data_ptr(), out.data_ptr(), cupy.int64(n_out),
            cupy.int32(volume), cupy.int32(c_in), cupy.int32(c_out)))
    return out


def sparse_conv_fp16_cpu_twin(feats: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The CPU twin of sparse_conv_fp16: fp16-rounded inputs and weights, fp32 accumulation, fp16 output."""
    f32 = feats.to(torch.float16).to(torch.float32)
    w32 = weight.to(torch.float16).to(torch.float32)
    n_out, volume = table.shape
    padded = torch.cat([f32, f32.new_zeros((1, f32.shape[1]))])
    index = torch.where(table < 0, torch.full_like(table, f32.shape[0]), table)
    columns = padded.index_select(0, index.reshape(-1)).view(n_out, volume * f32.shape[1])
    out = columns @ w32.reshape(volume * f32.shape[1], w32.shape[2])
    return out.to(torch.float16)
