"""SparseTensor: features [N, C] at integer coordinates [N, 4] (b, x, y, z), with a shared map cache."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from .kmap.keys import make_layout


class KernelMapCache:
    """Coordinate sets and kernel maps built once and shared by every layer of a network.

    Entries are keyed by the identity of the coordinate tensor they were built from (layers that keep the
    coordinates pass the same tensor object on), plus the convolution's geometry. Named entries
    (``indice_key``, as in spconv) remember a strided convolution so an inverse convolution can undo it.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple, tuple[torch.Tensor, Any]] = {}
        self.named: dict[str, Any] = {}
        self.build_seconds = 0.0
        self.prebuild_seconds = 0.0

    def get_or_build(self, coords: torch.Tensor, geometry: tuple, build: Callable[[], Any]) -> Any:
        key = (coords.data_ptr(), int(coords.shape[0]), str(coords.device)) + geometry
        entry = self._maps.get(key)
        if entry is not None and entry[0] is coords:
            return entry[1]
        import time

        from .functional.threads import single_threaded_ops
        started = time.perf_counter()
        with single_threaded_ops():
            value = build()
        self.build_seconds += time.perf_counter() - started
        self._maps[key] = (coords, value)                  # holding coords keeps data_ptr from being reused
        return value

    def __len__(self) -> int:
        return len(self._maps)


def _as_triple(value: Sequence[int] | int, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    try:
        out = tuple(int(v) for v in value)
    except TypeError as exc:
        raise TypeError(f"{name} must be 3 integers, got {value!r}") from exc
    if len(out) != 3:
        raise ValueError(f"{name} must have 3 entries (x, y, z), got {value!r}")
    return out  # type: ignore[return-value]


def validate_coords(feats: torch.Tensor, coords: torch.Tensor, spatial_shape: tuple[int, int, int],
                    batch_size: int) -> None:
    """Raise a clear error for anything that would make a kernel map wrong (duplicates are found by the maps)."""
    if feats.dim() != 2:
        raise ValueError(f"feats must be [N, C], got shape {tuple(feats.shape)}")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (b, x, y, z), got shape {tuple(coords.shape)}")
    if coords.dtype.is_floating_point or coords.dtype.is_complex or coords.dtype == torch.bool:
        raise TypeError(f"coords must be an integer tensor (int32/int64), got {coords.dtype}; "
                        f"voxelize float points with sparse_conv.voxelize")
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(f"feats has {feats.shape[0]} rows but coords has {coords.shape[0]}: they must match")
    if feats.device != coords.device:
        raise ValueError(f"feats on {feats.device} but coords on {coords.device}")
    if any(s < 1 for s in spatial_shape):
        raise ValueError(f"spatial_shape must be positive, got {spatial_shape}")
    make_layout(batch_size, spatial_shape, (1, 1, 1))          # raises OverflowError for huge grids
    if coords.shape[0] == 0:
        return
    low = coords.amin(dim=0).tolist()
    high = coords.amax(dim=0).tolist()
    limits = (batch_size,) + tuple(spatial_shape)
    names = ("batch", "x", "y", "z")
    for axis in range(4):
        if low[axis] < 0 or high[axis] >= limits[axis]:
            raise ValueError(f"coords {names[axis]} column spans [{low[axis]}, {high[axis]}], outside "
                             f"[0, {limits[axis] - 1}] (spatial_shape {spatial_shape}, batch_size {batch_size})")


class SparseTensor:
    """Sparse features on a 3D grid.

    feats: [N, C] float; coords: [N, 4] int32/int64 as (batch, x, y, z); spatial_shape: (X, Y, Z) of the grid
    at this tensor's resolution; batch_size: B; stride: the tensor stride relative to the input grid.
    Coordinates must be unique (the first kernel map raises ValueError on duplicates) and inside the grid.
    """

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, spatial_shape: Sequence[int],
                 batch_size: int = 1, stride: Sequence[int] | int = (1, 1, 1),
                 cache: Optional[KernelMapCache] = None, validate: bool = True) -> None:
        self.spatial_shape = _as_triple(spatial_shape, "spatial_shape")
        self.batch_size = int(batch_size)
        self.stride = _as_triple(stride, "stride")
        if validate:
            validate_coords(feats, coords, self.spatial_shape, self.batch_size)
        self.feats = feats
        self.coords = coords
        self.cache = cache if cache is not None else KernelMapCache()

    # spconv-compatible spellings
    @property
    def features(self) -> torch.Tensor:
        return self.feats

    @property
    def indices(self) -> torch.Tensor:
        return self.coords

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    def replace_feature(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates (and map cache), new features."""
        if feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"new feats has {feats.shape[0]} rows but the tensor has {self.coords.shape[0]} coords")
        return SparseTensor(feats, self.coords, self.spatial_shape, self.batch_size, self.stride, self.cache,
                            validate=False)

    def dense(self) -> torch.Tensor:
        """[B, C, X, Y, Z] dense tensor (zeros where no site is active)."""
        x, y, z = self.spatial_shape
        c = self.feats.shape[1]
        out = self.feats.new_zeros((self.batch_size, x, y, z, c))
        if len(self):
            idx = self.coords.to(torch.int64)
            out = out.index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), self.feats)
        return out.permute(0, 4, 1, 2, 3).contiguous()

    to_dense = dense

    def bev(self) -> torch.Tensor:
        """[B, C * Z, X, Y] with channel index c * Z + z (BEVFusion's flattening of the height axis)."""
        dense = self.dense()
        b, c, x, y, z = dense.shape
        return dense.permute(0, 1, 4, 2, 3).reshape(b, c * z, x, y)

    def __repr__(self) -> str:
        return (f"SparseTensor(n={len(self)}, channels={self.feats.shape[1]}, spatial_shape={self.spatial_shape}, "
                f"batch_size={self.batch_size}, stride={self.stride}, dtype={self.feats.dtype}, "
                f"device={self.feats.device})")
