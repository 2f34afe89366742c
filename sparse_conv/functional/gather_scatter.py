"""Gather-GEMM-scatter dataflow (CPU and CUDA through torch ops).

For every kernel offset k: ``out[out_idx_k] += feats[in_idx_k] @ weight[k]``. A submanifold map's centre
offset is the identity and becomes one dense ``feats @ weight[centre]`` that initialises the output (no
gather, no scatter). Offsets are applied in a fixed order and, within an offset, no output row is written
twice (see KernelMap), so results are bit-for-bit deterministic on CPU whatever the thread count: no float
atomics are involved.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..kmap.kernel_map import KernelMap
from . import threads


# Rows per chunk of the per-offset gather-GEMM-scatter (the gathered block stays in L2) and of the
# output-stationary im2col path; measured on the benchmark cloud (see README).
PAIR_CHUNK = 8192
IM2COL_CHUNK = 1024
IM2COL_MAX_CHANNELS = 32


class Epilogue:
    """What to apply to each finished block of output rows: + bias, + residual rows, ReLU (inference only)."""

    def __init__(self, bias: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                 relu: bool = False) -> None:
        self.bias, self.residual, self.relu = bias, residual, relu

    def __bool__(self) -> bool:
        return self.bias is not None or self.residual is not None or self.relu

    def apply(self, out: torch.Tensor, begin: int, end: int) -> None:
        rows = out[begin:end]
        if self.bias is not None:
            rows += self.bias
        if self.residual is not None:
            rows += self.residual[begin:end]
        if self.relu:
            rows.relu_()


def conv_forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                 bias: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                 relu: bool = False) -> torch.Tensor:
    """feats [n_in, Cin], weight [K, Cin, Cout] -> relu?([n_out, Cout] + bias + residual).

    Submanifold maps with few input channels use the output-stationary im2col dataflow (one big GEMM per
    block of output rows, no scatter); everything else the chunked gather-GEMM-scatter. The epilogue (bias,
    residual, ReLU) runs on each worker's rows while they are still in cache.
    """
    epilogue = Epilogue(bias, residual, relu)
    if feats.is_cuda and feats.dtype == torch.float16 and not torch.is_grad_enabled() and kmap.n_out > 0:
        from ..cuda import kernels                                   # fp16 CuPy kernel, fp32 accumulation
        if kernels.available():
            out = kernels.sparse_conv_fp16(feats, weight, kmap.neighbor_table_cached())
            epilogue.apply(out, 0, out.shape[0])
            return out
    with threads.single_threaded_ops():
        if (kmap.identity_offset is not None and feats.shape[1] <= IM2COL_MAX_CHANNELS
                and feats.device.type == "cpu" and kmap.n_out > 0):
            return im2col_forward(feats, weight, kmap, epilogue=epilogue)
        return gather_gemm_scatter_forward(feats, weight, kmap, epilogue=epilogue)


def _sorted_by_output(kmap: KernelMap) -> bool:
    """Whether every offset's pairs are sorted by output row (true for the maps kmap.build produces)."""
    flag = kmap._cache.get("sorted_by_output")
    if flag is None:
        flag = True
        for k in range(kmap.kernel_volume):
            start, stop = kmap.offsets_ptr[k], kmap.offsets_ptr[k + 1]
            if stop - start > 1 and not bool((kmap.out_idx[start + 1:stop] >= kmap.out_idx[start:stop - 1]).all()):
                flag = False
                break
        kmap._cache["sorted_by_output"] = flag
    return flag


def _workers_for(feats: torch.Tensor, kmap: KernelMap) -> int:
    workers = threads.requested_workers()
    if feats.device.type != "cpu" or workers < 2 or not _sorted_by_output(kmap):
        return 1
    return workers


def gather_gemm_scatter_forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                                chunk: int = PAIR_CHUNK, epilogue: Optional[Epilogue] = None) -> torch.Tensor:
    c_in, c_out = weight.shape[1], weight.shape[2]
    centre = kmap.identity_offset
    identity = centre is not None and kmap.n_in == kmap.n_out
    workers = _workers_for(feats, kmap)
    out = feats.new_empty((kmap.n_out, c_out)) if identity else feats.new_zeros((kmap.n_out, c_out))
    if workers == 1:
        _gather_gemm_scatter_rows(feats, weight, kmap, out, 0, kmap.n_out, None, chunk)
        if epilogue:
            epilogue.apply(out, 0, kmap.n_out)
        return out
    parts = max(1, min(workers, kmap.n_out // 2048))
    ranges = threads.row_ranges(kmap.n_out, parts)
    key = ("bounds", parts)
    bounds = kmap._cache.get(key)
    if bounds is None:
        bounds = kmap._cache[key] = threads.offset_row_bounds(
            kmap.out_idx, kmap.offsets_ptr, [begin for begin, _ in ranges] + [kmap.n_out])
    index_of = {begin: j for j, (begin, _) in enumerate(ranges)}

    def task(begin: int, end: int) -> None:
        j = index_of[begin]
        spans = [(bounds[k][j], bounds[k][j + 1]) for k in range(kmap.kernel_volume)]
        _gather_gemm_scatter_rows(feats, weight, kmap, out, begin, end, spans, chunk)
        if epilogue:
            epilogue.apply(out, begin, end)

    threads.run_partitioned(task, kmap.n_out, parts, min_rows=1)
    return out


def _gather_gemm_scatter_rows(feats, weight, kmap, out, row_begin, row_end, spans, chunk) -> None:
    """Accumulate into out[row_begin:row_end] the pairs whose output row lies there (spans[k]: their range)."""
    c_in, c_out = weight.shape[1], weight.shape[2]
    centre = kmap.identity_offset
    if centre is not None and kmap.n_in == kmap.n_out:
        torch.mm(feats[row_begin:row_end], weight[centre], out=out[row_begin:row_end])
    if spans is None:
        spans = [(kmap.offsets_ptr[k], kmap.offsets_ptr[k + 1]) for k in range(kmap.kernel_volume)]
    longest = max((stop - start for k, (start, stop) in enumerate(spans) if k != centre), default=0)
    rows = min(chunk, longest)
    if rows == 0:
        return
    gathered = feats.new_empty((rows, c_in))
    product = feats.new_empty((rows, c_out))
    for k in range(kmap.kernel_volume):
        if k == centre:
            continue
        start, stop = spans[k]
        for begin in range(start, stop, chunk):
            end = min(begin + chunk, stop)
            m = end - begin
            g = torch.index_select(feats, 0, kmap.in_idx[begin:end], out=gathered[:m])
            p = torch.mm(g, weight[k], out=product[:m])
            out.index_add_(0, kmap.out_idx[begin:end], p)


def im2col_forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                   chunk: int = IM2COL_CHUNK, epilogue: Optional[Epilogue] = None) -> torch.Tensor:
    """out[o] = concat_k feats[table[o, k]] @ weight.view(K * Cin, Cout), missing neighbours read a zero row."""
    table = kmap.padded_neighbor_table()                       # [n_out, K], missing -> n_in (the zero row)
    n_out, volume = table.shape
    c_in = feats.shape[1]
    padded = torch.cat([feats, feats.new_zeros((1, c_in))])
    flat_weight = weight.reshape(volume * c_in, weight.shape[2])
    out = feats.new_empty((n_out, weight.shape[2]))
    flat_table = table.view(-1)

    def task(row_begin: int, row_end: int) -> None:
        rows = min(chunk, row_end - row_begin)
        columns = feats.new_empty((rows * volume, c_in))
        for begin in range(row_begin, row_end, chunk):
            end = min(begin + chunk, row_end)
            m = end - begin
            g = torch.index_select(padded, 0, flat_table[begin * volume:end * volume], out=columns[:m * volume])
            torch.mm(g.view(m, volume * c_in), flat_weight, out=out[begin:end])
            if epilogue:
                epilogue.apply(out, begin, end)

    threads.run_partitioned(task, n_out, _workers_for(feats, kmap))
    return out


def conv_backward(grad_out: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap,
                  need_feats: bool, need_weight: bool) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of conv_forward with respect to feats and weight.

    grad_feats is the forward dataflow run through the transposed map with weight[k]^T (so it gets the same
    row-partitioned workers and the same determinism); grad_weight[k] = gathered_in_k^T @ gathered_grad_k,
    one offset per task (tasks write disjoint slices).
    """
    centre = kmap.identity_offset
    grad_feats = grad_weight = None
    with threads.single_threaded_ops() as workers:
        if need_feats:
            transposed = kmap._cache.get("transposed")
            if transposed is None:
                transposed = kmap._cache["transposed"] = kmap.transposed()
            grad_feats = gather_gemm_scatter_forward(grad_out, weight.transpose(1, 2).contiguous(), transposed)
        if need_weight:
            def offset_gradient(k: int) -> torch.Tensor:
                if k == centre:
                    return torch.mm(feats.t(), grad_out)
                start, stop = kmap.offsets_ptr[k], kmap.offsets_ptr[k + 1]
                if stop == start:
                    return weight.new_zeros(weight.shape[1:])
                return torch.mm(feats.index_select(0, kmap.in_idx[start:stop]).t(),
                                grad_out.index_select(0, kmap.out_idx[start:stop]))

            offsets = list(range(kmap.kernel_volume))
            use = workers if feats.device.type == "cpu" else 1
            grad_weight = torch.stack(threads.parallel_map(offset_gradient, offsets, use))
    return grad_feats, grad_weight
