"""Pooling kernels in plain torch (the CPU path; also runs on CUDA tensors when asked for ``backend="torch"``).

Formulation: with the plan's points sorted by cell, the fused pooling

    bev[cell, c] = sum over in-grid points k of cell:  depth_probs[point_index[k]] * F[pixel_index[k], c]

(``F = feats`` as ``[pixels, C]``) is a weighted sparse-times-dense product ``A @ F`` whose sparse matrix
``A [cells x pixels]`` has the plan's CSR structure and the gathered depth probabilities as values. It is
computed with ``embedding_bag(mode="sum", per_sample_weights=...)`` — one bag per BEV cell, the feature
matrix as the table — which on CPU runs FBGEMM's vectorized SpMDM kernels and never forms the
``[points, C]`` product. The only per-point temporary is the gathered weight vector ``[K]``; the output is
written one chunk of cells at a time straight into the (channels-last) result, so the extra memory is
``K`` weights + ``C x pixels`` (the transposed features) + small per-chunk index vectors.

The classic form (``point_feats [P, C]`` already multiplied) is the same with ``point_index`` as the bag
indices and no weights. Backward passes are the transposed products (bags per pixel / scatter per point).
"""
from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as functional

from .plan import BEVPoolPlan

# Cells per embedding_bag call (16384 x 80 fp32 = 5 MB of output per call): measured on the nuScenes
# config, 2 threads, interleaved: 2048 19.3 ms, 4096 17.0, 8192 15.8, 16384 14.6, 32768 14.9 (identical sums);
# fewer calls amortize the per-call setup and give the threads larger shares.
CELL_CHUNK = 16384
# Points per chunk in the backward gathers: bounds the [chunk, C] temporaries (5 MB at C = 80 fp32), small
# enough to be reused from the heap instead of page-faulting fresh memory every chunk.
POINT_CHUNK = 1 << 14

_COMPUTE_DTYPES = (torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs are accumulated in fp32 (as the CUDA kernel does)."""
    return dtype if dtype in _COMPUTE_DTYPES else torch.float32


def _bag_into(out_rows: torch.Tensor, table: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor,
              weights: torch.Tensor | None) -> None:
    """``out_rows[i] = sum_j weights[j] * table[indices[j]]`` over bag ``i`` (``offsets`` = bag starts)."""
    if out_rows.is_cpu and out_rows.is_contiguous():
        try:  # the out= overload writes the bag sums in place (no extra output buffer, no copy)
            empty = indices.new_empty(0)
            torch.ops.aten._embedding_bag_forward_only.out(
                table, indices, offsets, False, 0, False, weights, False, -1,
                out0=out_rows, out1=empty, out2=empty.clone(), out3=empty.clone())
            return
        except (RuntimeError, AttributeError):  # pragma: no cover - older/newer torch without the overload
            pass
    out_rows.copy_(functional.embedding_bag(indices, table, offsets, mode="sum", per_sample_weights=weights))


def _pool_sorted(out_flat: torch.Tensor, table: torch.Tensor, indices: torch.Tensor,
                 weights: torch.Tensor | None, row_offsets: torch.Tensor, chunk: int = CELL_CHUNK) -> None:
    """Bag sums for every row of ``out_flat`` (``row_offsets [rows + 1]``: CSR pointer into ``indices``)."""
    rows = out_flat.shape[0]
    if indices.numel() == 0:
        out_flat.zero_()
        return
    bounds = row_offsets[::chunk].tolist() + [int(row_offsets[-1])]
    for number, start in enumerate(range(0, rows, chunk)):
        stop = min(start + chunk, rows)
        first, last = bounds[number], bounds[number + 1]
        _bag_into(out_flat[start:stop], table, indices[first:last], row_offsets[start:stop] - first,
                  None if weights is None else weights[first:last])


def feats_as_rows(feats: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, N, C, H, W]`` -> ``[B*N*W*H, C]`` contiguous (row = the plan's pixel index)."""
    channels = feats.shape[2]
    return feats.permute(0, 1, 4, 3, 2).to(dtype).reshape(-1, channels).contiguous()


def rows_as_feats(rows: torch.Tensor, geometry_shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``feats_as_rows``: ``[B*N*W*H, C]`` -> ``[B, N, C, H, W]`` (contiguous)."""
    batch, cams, _, height, width = geometry_shape
    return rows.view(batch, cams, width, height, -1).permute(0, 1, 4, 3, 2).contiguous()


def _workspace(plan: BEVPoolPlan, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A scratch tensor kept on the plan between calls, one per thread (so concurrent callers never share).

    The per-frame temporaries (gathered weights, 6.4 MB, and the transposed feature table, 5.4 MB, on the
    nuScenes config) are large enough that the allocator hands them back to the OS after every frame, and
    each fresh allocation page-faults its memory in again: reusing them measured 17.5 vs 18.1 ms per frame
    (2 threads, four interleaved rounds; with the int32 weight gather below). Their contents never outlive
    one call, so reuse is safe; backward does not read them. They count in the pooling's extra memory."""
    spaces = plan.__dict__.setdefault("_cpu_workspace", threading.local())
    tensors = spaces.__dict__.setdefault("tensors", {})          # this thread's
    tensor = tensors.get((name, dtype))
    if tensor is None or tuple(tensor.shape) != shape:
        tensor = tensors[(name, dtype)] = torch.empty(shape, dtype=dtype)
    return tensor


def _int32(plan: BEVPoolPlan, name: str) -> torch.Tensor:
    """int32 copy of the plan's index tensor ``name`` on CPU, made once per plan; the int64 tensor itself
    on other devices, or when the frustum has too many points for int32 indices. The plan keeps int64,
    its portable format."""
    tensor = getattr(plan, name)
    if tensor.device.type != "cpu" or math.prod(plan.geometry_shape) >= 2**31:
        return tensor
    copies = plan.__dict__.setdefault("_int32_copies", {})
    cached = copies.get(name)
    if cached is None or cached[0] is not tensor:
        cached = copies[name] = (tensor, tensor.to(torch.int32))
    return cached[1]


def _bag_indices(plan: BEVPoolPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_index, cell_offsets)`` for the bag kernels, int32 on CPU: FBGEMM's embedding_bag reads them
    faster than int64 (half the index bandwidth; measured on the nuScenes config: 9.0 vs 10.0 ms per frame,
    identical sums). The weight gather reads ``point_index`` the same way (1.6 vs 1.9 ms)."""
    return _int32(plan, "pixel_index"), _int32(plan, "cell_offsets")


def fused_forward(plan: BEVPoolPlan, depth_probs: torch.Tensor, feats: torch.Tensor,
                  out_flat: torch.Tensor) -> None:
    """Fused pooling into ``out_flat [cells, C]`` (contiguous; any float dtype)."""
    dtype = compute_dtype(feats.dtype)
    if out_flat.is_cpu:
        batch, cams, channels, height, width = feats.shape
        table = _workspace(plan, "table", (batch * cams * width * height, channels), dtype)
        table.view(batch, cams, width, height, channels).copy_(feats.permute(0, 1, 4, 3, 2))
        weights = _workspace(plan, "weights", (plan.num_points,), dtype)
        torch.index_select(depth_probs.reshape(-1).to(dtype), 0, _int32(plan, "point_index"), out=weights)
    else:
        table = feats_as_rows(feats, dtype)
        weights = depth_probs.reshape(-1).to(dtype).index_select(0, plan.point_index)
    target = out_flat if out_flat.dtype == dtype else torch.empty(out_flat.shape, dtype=dtype,
                                                                  device=out_flat.device)
    pixel_index, cell_offsets = _bag_indices(plan)
    _pool_sorted(target, table, pixel_index, weights, cell_offsets)
    if target is not out_flat:
        out_flat.copy_(target)


def points_forward(plan: BEVPoolPlan, point_feats: torch.Tensor, out_flat: torch.Tensor) -> None:
    """Classic pooling of ``point_feats [P, C]`` (frustum order) into ``out_flat [cells, C]``."""
    dtype = compute_dtype(point_feats.dtype)
    table = point_feats.to(dtype).contiguous()
    target = out_flat if out_flat.dtype == dtype else torch.empty(out_flat.shape, dtype=dtype,
                                                                  device=out_flat.device)
    _pool_sorted(target, table, plan.point_index, None, plan.cell_offsets)
    if target is not out_flat:
        out_flat.copy_(target)


# ---------------------------------------------------------------------------------------------- backward


def _pixel_order(plan: BEVPoolPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted points re-ordered by pixel, and the pixel CSR pointer (cached on the plan)."""
    cached = plan._backward_cache.get("pixel_order")
    if cached is None:
        batch, cams, _, height, width = plan.geometry_shape
        num_pixels = batch * cams * height * width
        pixels, order = torch.sort(plan.pixel_index, stable=True)
        offsets = torch.zeros(num_pixels + 1, dtype=torch.int64, device=plan.device)
        torch.cumsum(torch.bincount(pixels, minlength=num_pixels), 0, out=offsets[1:])
        cached = (order, offsets)
        plan._backward_cache["pixel_order"] = cached
    return cached


def fused_backward(plan: BEVPoolPlan, depth_probs: torch.Tensor, feats: torch.Tensor, grad_flat: torch.Tensor,
                   need_depth: bool, need_feats: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the fused form given ``grad_flat [cells, C]`` (contiguous, compute dtype)."""
    batch, cams, depth, height, width = plan.geometry_shape
    channels = feats.shape[2]
    dtype = grad_flat.dtype
    weights = depth_probs.reshape(-1).to(dtype).index_select(0, plan.point_index)
    cells = plan.cell_of_points()
    grad_depth = grad_feats = None
    if need_feats:
        order, pixel_offsets = _pixel_order(plan)
        rows = torch.empty(batch * cams * height * width, channels, dtype=dtype, device=grad_flat.device)
        _pool_sorted(rows, grad_flat, cells[order], weights[order], pixel_offsets)
        grad_feats = rows_as_feats(rows, plan.geometry_shape)
    if need_depth:
        table = feats_as_rows(feats, dtype)
        flat = torch.zeros(batch * cams * depth * height * width, dtype=dtype, device=grad_flat.device)
        for start in range(0, plan.num_points, POINT_CHUNK):
            stop = min(start + POINT_CHUNK, plan.num_points)
            products = grad_flat.index_select(0, cells[start:stop])
            products.mul_(table.index_select(0, plan.pixel_index[start:stop]))
            flat[plan.point_index[start:stop]] = products.sum(dim=1)
        grad_depth = flat.view(batch, cams, depth, height, width)
    return grad_depth, grad_feats


def points_backward(plan: BEVPoolPlan, grad_flat: torch.Tensor, num_points: int) -> torch.Tensor:
    """Gradient of the classic form: each in-grid point receives its cell's gradient; others zero."""
    grad = torch.zeros(num_points, grad_flat.shape[1], dtype=grad_flat.dtype, device=grad_flat.device)
    cells = plan.cell_of_points()
    for start in range(0, plan.num_points, POINT_CHUNK):
        stop = min(start + POINT_CHUNK, plan.num_points)
        grad.index_copy_(0, plan.point_index[start:stop], grad_flat.index_select(0, cells[start:stop]))
    return grad
