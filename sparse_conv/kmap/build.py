"""Kernel-map construction on packed int64 keys: sort + searchsorted, no dense grid, no hashing.

- Submanifold maps (output set = input set): the keys are sorted once; for each offset in the first half of
  the kernel the shifted keys are looked up with ``searchsorted``; the mirrored offset's pairs are the same
  pairs swapped (offset -d pairs (o, i) exactly when offset d pairs (i, o)), and the centre is the identity.
- Strided maps (spconv ``SparseConv3d`` output set): every output site that at least one input reaches;
  each (input, offset) pair determines its output directly, so the pairs need no search at all, only a
  ``unique`` over the produced output keys.
- Transposed maps (``SparseConvTranspose3d``): every site ``c * stride - padding + k * dilation`` in range.
- Inverse maps (spconv ``SparseInverseConv3d``) are the transpose of a cached strided map.
"""
from __future__ import annotations

from itertools import product
from typing import Optional, Sequence

import numpy as np
import torch

from .keys import KeyLayout, make_layout
from .kernel_map import KernelMap


def _triple(value, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    return out  # type: ignore[return-value]


def kernel_offsets(kernel_size: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int, int]]:
    """Centred offsets of a submanifold kernel, row-major over (kx, ky, kz)."""
    return [tuple((i - k // 2) * d for i, k, d in zip(idx, kernel_size, dilation))  # type: ignore[misc]
            for idx in product(*(range(k) for k in kernel_size))]


def sort_keys(keys: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Sorted keys and the permutation (None when the keys are already strictly increasing)."""
    if keys.numel() < 2 or bool((keys[1:] > keys[:-1]).all()):
        return keys, None
    sorted_keys, perm = torch.sort(keys)
    return sorted_keys, perm


def check_no_duplicates(sorted_keys: torch.Tensor, layout: KeyLayout) -> None:
    if sorted_keys.numel() < 2:
        return
    dup = sorted_keys[1:] == sorted_keys[:-1]
    if bool(dup.any()):
        first = int(torch.nonzero(dup)[0, 0])
        where = layout.unpack(sorted_keys[first:first + 1])[0].tolist()
        raise ValueError(
            f"coords contain duplicate coordinates ({int(dup.sum())} duplicates, e.g. (b, x, y, z) = {where}); "
            f"merge them first (sparse_conv.voxelize does)")


def _searchsorted(sorted_keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``torch.searchsorted`` (left); on CPU through numpy's, which starts each binary search from the previous
    query's result when the queries increase, as every query here does (keys + a constant): 205 vs 342 us for
    10.6k keys, the tiny config's first level (one of 12 searches per frame)."""
    if sorted_keys.device.type == "cpu" and queries.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(sorted_keys.numpy(), queries.numpy()))
    return torch.searchsorted(sorted_keys, queries)


def _lookup(sorted_keys: torch.Tensor, queries: torch.Tensor, hint: Optional[torch.Tensor] = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of ``queries`` in ``sorted_keys`` and whether they are present (exact match)."""
    n = sorted_keys.numel()
    pos = _searchsorted(sorted_keys, queries) if hint is None else hint
    pos = pos.clamp(max=n - 1)
    return pos, sorted_keys.index_select(0, pos) == queries


def _half_pairs(sorted_keys: torch.Tensor, layout: KeyLayout, half_offsets, kernel, dilation
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(input rows, output rows) in sorted order for each offset of the first half of the kernel.

    Output row o (sorted position) pairs with the input row holding key(o) + offset_key. With unit dilation
    along z, one ``searchsorted`` per (dx, dy) column finds the lowest dz of the column; the other dz follow by
    stepping along the sorted keys (keys are unique, so key + 1 can only sit right after key). The (0, 0, dz)
    offsets need no search at all for a kernel of 3 along z: key - 1 can only sit right before key.
    Columns are independent and run on the worker threads.
    """
    n = sorted_keys.numel()
    rows = torch.arange(n, device=sorted_keys.device)

    def pairs(pos: torch.Tensor, hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_rows = torch.nonzero(hit).squeeze(1)
        return pos.index_select(0, out_rows), out_rows

    if dilation[2] != 1:
        found = [pairs(*_lookup(sorted_keys, sorted_keys + layout.offset_key(o))) for o in half_offsets]
        return [f[0] for f in found], [f[1] for f in found]

    lowest = -(kernel[2] // 2)
    columns = list(dict.fromkeys((dx, dy) for dx, dy, _ in half_offsets))
    wanted = {column: [dz for dx, dy, dz in half_offsets if (dx, dy) == column] for column in columns}

    def column_pairs(column: tuple[int, int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        dx, dy = column
        base = sorted_keys + layout.offset_key((dx, dy, lowest))
        if dx == 0 and dy == 0 and kernel[2] == 3:
            pos = (rows - 1).clamp_(min=0)
        else:
            pos = _searchsorted(sorted_keys, base)
        result = {}
        last = max(wanted[column])
        for j in range(last - lowest + 1):
            p, hit = _lookup(sorted_keys, base + j, pos)
            if lowest + j in wanted[column]:
                result[lowest + j] = pairs(p, hit)
            pos = p + hit.to(p.dtype)
        return result

    from ..functional.threads import parallel_map, requested_workers
    per_column = dict(zip(columns, parallel_map(column_pairs, columns, requested_workers())))
    found = [per_column[(dx, dy)][dz] for dx, dy, dz in half_offsets]
    return [f[0] for f in found], [f[1] for f in found]


def build_submanifold_map(coords: torch.Tensor, batch_size: int, spatial_shape: Sequence[int],
                          kernel_size=3, dilation=1) -> KernelMap:
    """Map of a submanifold convolution: output rows are the input rows."""
    kernel = _triple(kernel_size, "kernel_size")
    dil = _triple(dilation, "dilation")
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"submanifold convolution needs an odd kernel size, got {kernel}")
    n = int(coords.shape[0])
    volume = kernel[0] * kernel[1] * kernel[2]
    centre = volume // 2
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=coords.device)
        return KernelMap(empty, empty, [0] * (volume + 1), volume, 0, 0, centre)
    margin = tuple((k // 2) * d for k, d in zip(kernel, dil))
    layout = make_layout(batch_size, spatial_shape, margin)
    sorted_keys, perm = sort_keys(layout.pack(coords))
    check_no_duplicates(sorted_keys, layout)
    offsets = kernel_offsets(kernel, dil)
    half_in, half_out = _half_pairs(sorted_keys, layout, offsets[:centre], kernel, dil)
    in_parts: list[torch.Tensor] = []
    out_parts: list[torch.Tensor] = []
    ptr = [0]
    for k in range(volume):
        if k < centre:
            in_parts.append(half_in[k])
            out_parts.append(half_out[k])
        elif k > centre:
            m = volume - 1 - k                                                # the mirrored offset
            in_parts.append(half_out[m])
            out_parts.append(half_in[m])
        ptr.append(ptr[-1] + (int(in_parts[-1].numel()) if k != centre else 0))
    in_idx = torch.cat(in_parts) if in_parts else sorted_keys.new_zeros(0)
    out_idx = torch.cat(out_parts) if out_parts else sorted_keys.new_zeros(0)
    if perm is not None:
        in_idx = perm[in_idx]
        out_idx = perm[out_idx]
    return KernelMap(in_idx, out_idx, ptr, volume, n, n, centre)


def conv_output_shape(spatial_shape: Sequence[int], kernel_size, stride, padding, dilation) -> tuple[int, int, int]:
    kernel, st, pad, dil = (_triple(v, name) for v, name in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                               (padding, "padding"), (dilation, "dilation")))
    out = tuple((s + 2 * p - d * (k - 1) - 1) // t + 1 for s, k, t, p, d in zip(spatial_shape, kernel, st, pad, dil))
    if any(o < 1 for o in out):
        raise ValueError(f"convolution (kernel {kernel}, stride {st}, padding {pad}, dilation {dil}) of spatial "
                         f"shape {tuple(spatial_shape)} leaves no output ({out})")
    return out  # type: ignore[return-value]


def transposed_output_shape(spatial_shape: Sequence[int], kernel_size, stride, padding, dilation,
                            output_padding=0) -> tuple[int, int, int]:
    kernel, st, pad, dil, opad = (_triple(v, n) for v, n in (
        (kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"), (dilation, "dilation"),
        (output_padding, "output_padding")))
    out = tuple((s - 1) * t - 2 * p + d * (k - 1) + 1 + q
                for s, k, t, p, d, q in zip(spatial_shape, kernel, st, pad, dil, opad))
    if any(o < 1 for o in out):
        raise ValueError(f"transposed convolution of spatial shape {tuple(spatial_shape)} leaves no output ({out})")
    return out  # type: ignore[return-value]


def _pairs_from_candidates(coords: torch.Tensor, per_dim_valid: list[torch.Tensor], per_dim_out: list[torch.Tensor],
                           batch_size: int, out_shape: tuple[int, int, int], kernel: tuple[int, int, int]
                           ) -> tuple[torch.Tensor, KernelMap]:
    """Shared tail of the strided and transposed builders.

    per_dim_valid[d] / per_dim_out[d]: [k_d, n] whether input n reaches an output along dim d through kernel
    index k_d, and that output's coordinate.
    """
    n = int(coords.shape[0])
    volume = kernel[0] * kernel[1] * kernel[2]
    vx, vy, vz = per_dim_valid
    valid = (vx[:, None, None, :] & vy[None, :, None, :] & vz[None, None, :, :]).view(volume, n)
    layout = make_layout(batch_size, out_shape)
    ox, oy, oz = per_dim_out
    _, yo, zo = out_shape
    offset_index, rows = torch.nonzero(valid, as_tuple=True)                      # offset-major, then row
    # keys only for the valid (offset, row) pairs: gather each axis' output coordinate
    ix = torch.div(offset_index, kernel[1] * kernel[2], rounding_mode="floor")
    iy = torch.div(offset_index, kernel[2], rounding_mode="floor") % kernel[1]
    iz = offset_index % kernel[2]
    x_out = ox.reshape(-1).index_select(0, ix * n + rows)
    y_out = oy.reshape(-1).index_select(0, iy * n + rows)
    z_out = oz.reshape(-1).index_select(0, iz * n + rows)
    batch = coords[:, 0].index_select(0, rows)
    pair_keys = ((batch * out_shape[0] + x_out) * yo + y_out) * zo + z_out
    counts = torch.bincount(offset_index, minlength=volume).tolist()
    unique_keys, inverse = torch.unique(pair_keys, sorted=True, return_inverse=True)
    ptr = [0]
    for c in counts:
        ptr.append(ptr[-1] + int(c))
    kmap = KernelMap(rows, inverse, ptr, volume, n, int(unique_keys.numel()), None)
    return layout.unpack(unique_keys), kmap


def build_strided_map(coords: torch.Tensor, batch_size: int, spatial_shape: Sequence[int], kernel_size=3,
                      stride=1, padding=0, dilation=1) -> tuple[torch.Tensor, tuple[int, int, int], KernelMap]:
    """spconv ``SparseConv3d`` semantics: the output set is every site reached by at least one input.

    Output ``o`` gets input ``c`` through offset ``k`` when ``o * stride - padding + k * dilation == c``.
    Returns (output coords [M, 4] int64 sorted by (b, x, y, z), output spatial shape, map).
    """
    kernel, st, pad, dil = (_triple(v, name) for v, name in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                               (padding, "padding"), (dilation, "dilation")))
    out_shape = conv_output_shape(spatial_shape, kernel, st, pad, dil)
    make_layout(batch_size, spatial_shape)
    valid, outs = [], []
    c64 = coords.to(torch.int64)
    for d in range(3):
        k_index = torch.arange(kernel[d], device=coords.device).unsqueeze(1)
        numer = c64[:, d + 1].unsqueeze(0) + pad[d] - k_index * dil[d]             # [k_d, n]
        if st[d] & (st[d] - 1) == 0:                                                # power of two: shifts
            shift = st[d].bit_length() - 1
            out = numer >> shift
            divisible = (numer & (st[d] - 1)) == 0
        else:
            out = torch.div(numer, st[d], rounding_mode="floor")
            divisible = numer - out * st[d] == 0
        valid.append((numer >= 0) & divisible & (out < out_shape[d]))
        outs.append(out)
    out_coords, kmap = _pairs_from_candidates(c64, valid, outs, batch_size, out_shape, kernel)
    return out_coords, out_shape, kmap


def build_transposed_map(coords: torch.Tensor, batch_size: int, spatial_shape: Sequence[int], kernel_size=3,
                         stride=1, padding=0, dilation=1, output_padding=0
                         ) -> tuple[torch.Tensor, tuple[int, int, int], KernelMap]:
    """``conv_transpose3d`` semantics: input ``c`` feeds ``c * stride - padding + k * dilation`` (if in range)."""
    kernel, st, pad, dil = (_triple(v, name) for v, name in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                               (padding, "padding"), (dilation, "dilation")))
    out_shape = transposed_output_shape(spatial_shape, kernel, st, pad, dil, output_padding)
    valid, outs = [], []
    c64 = coords.to(torch.int64)
    for d in range(3):
        k_index = torch.arange(kernel[d], device=coords.device).unsqueeze(1)
        out = c64[:, d + 1].unsqueeze(0) * st[d] - pad[d] + k_index * dil[d]
        valid.append((out >= 0) & (out < out_shape[d]))
        outs.append(out)
    out_coords, kmap = _pairs_from_candidates(c64, valid, outs, batch_size, out_shape, kernel)
    return out_coords, out_shape, kmap
