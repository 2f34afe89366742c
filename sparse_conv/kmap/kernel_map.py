"""The kernel map: for every kernel offset, which input rows feed which output rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class KernelMap:
    """Input/output row pairs grouped by kernel offset.

    Offset ``k`` (row-major over (kx, ky, kz), matching the weight's first dimensions) owns the pairs
    ``in_idx[offsets_ptr[k]:offsets_ptr[k+1]]`` -> ``out_idx[...]``. Within one offset every output row
    appears at most once (and every input row at most once), so a scatter of one offset never has two
    writers to the same row: accumulation order is fixed by the offset order, hence deterministic.

    ``identity_offset`` is the centre offset of a submanifold map, whose pairs are the identity (row i to row
    i); they are not stored, and the dataflow treats that offset as a plain dense matmul.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    offsets_ptr: list[int]
    kernel_volume: int
    n_in: int
    n_out: int
    identity_offset: Optional[int] = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def pair_slice(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = self.offsets_ptr[k], self.offsets_ptr[k + 1]
        return self.in_idx[start:stop], self.out_idx[start:stop]

    def pair_count(self, k: int) -> int:
        if k == self.identity_offset:
            return self.n_in
        return self.offsets_ptr[k + 1] - self.offsets_ptr[k]

    @property
    def num_pairs(self) -> int:
        """All (input, output, offset) triples, the implicit identity included."""
        return int(self.in_idx.numel()) + (self.n_in if self.identity_offset is not None else 0)

    def transposed(self) -> "KernelMap":
        """The map of the transposed convolution (outputs become inputs), same offsets and weights."""
        return KernelMap(self.out_idx, self.in_idx, self.offsets_ptr, self.kernel_volume, self.n_out,
                         self.n_in, self.identity_offset)

    def to(self, device: torch.device) -> "KernelMap":
        return KernelMap(self.in_idx.to(device), self.out_idx.to(device), self.offsets_ptr,
                         self.kernel_volume, self.n_in, self.n_out, self.identity_offset)

    def neighbor_table_cached(self) -> torch.Tensor:
        cached = self._cache.get("table")
        if cached is None:
            cached = self._cache["table"] = self.neighbor_table()
        return cached

    def padded_neighbor_table(self) -> torch.Tensor:
        """neighbor_table() with -1 replaced by n_in (index of an appended zero row); cached."""
        cached = self._cache.get("padded_table")
        if cached is None:
            cached = self.neighbor_table_cached().clone()
            cached[cached < 0] = self.n_in
            self._cache["padded_table"] = cached
        return cached

    def neighbor_table(self) -> torch.Tensor:
        """[n_out, K] int64: the input row feeding output row o through offset k, or -1 where none."""
        table = torch.full((self.n_out, self.kernel_volume), -1, dtype=torch.int64, device=self.in_idx.device)
        for k in range(self.kernel_volume):
            if k == self.identity_offset:
                rows = torch.arange(self.n_out, device=self.in_idx.device)
                table[rows, k] = rows
                continue
            ins, outs = self.pair_slice(k)
            table[outs, k] = ins
        return table
