"""BEVFusion's LiDAR SparseEncoder (mmdet3d ``SparseEncoder`` as configured by BEVFusion), on sparse_conv.

Structure (parameter names match mmdet3d, so checkpoints map key for key):

- ``conv_input``: SubM 3x3x3 in_channels -> base_channels, BN, ReLU
- ``encoder_layers.encoder_layer{i+1}`` for each stage ``i`` of ``encoder_channels``: one SparseBasicBlock
  per channel entry, except that the last entry of every stage but the last is a strided SparseConv3d
  (kernel 3, stride 2, padding ``encoder_paddings[i][-1]``) + BN + ReLU
- ``conv_out``: SparseConv3d kernel (1, 1, 3), stride (1, 1, 2), padding 0, + BN + ReLU
- output: the dense [B, C, X', Y', Z'] volume flattened to BEV [B, C * Z', X', Y'] (channel c * Z' + z)

Output shape: each strided stage maps a size ``s`` to ``(s + 2p - 3) // 2 + 1`` per axis (p its padding
along that axis), and ``conv_out`` maps z to ``(z - 3) // 2 + 1``. For the nuScenes grid (1440, 1440, 41):
-> (720, 720, 21) -> (360, 360, 11) -> (180, 180, 5) [padding (1, 1, 0)] -> z 2, so the output is
[B, 128 * 2, 180, 180]. ``SparseEncoder.output_shape()`` computes it for any configuration.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .kmap.build import conv_output_shape
from .nn import BatchNorm, ReLU, Sequential, SparseBasicBlock, SparseConv3d, SubMConv3d
from .kmap.keys import make_layout
from .tensor import SparseTensor


def sort_by_key(x: SparseTensor) -> SparseTensor:
    """The same sites in (b, x, y, z) order: every kernel map of the network is then built without a
    permutation and gathers walk memory forwards. Row order is internal to the encoder (its output is dense)."""
    if len(x) < 2:
        return x
    keys = make_layout(x.batch_size, x.spatial_shape).pack(x.coords)
    if bool((keys[1:] > keys[:-1]).all()):
        return x
    order = torch.argsort(keys)
    return SparseTensor(x.feats.index_select(0, order), x.coords.index_select(0, order), x.spatial_shape,
                        x.batch_size, x.stride, x.cache, validate=False)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def _conv_module(conv: nn.Module, channels: int) -> Sequential:
    return Sequential(conv, BatchNorm(channels, eps=BN_EPS, momentum=BN_MOMENTUM), ReLU())


def _padding_triple(padding) -> tuple[int, int, int]:
    if isinstance(padding, int):
        return (padding, padding, padding)
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


class SparseEncoder(nn.Module):
    """BEVFusion SparseEncoder: voxel features [V, C] at coords [V, 4] (b, x, y, z) -> BEV [B, C_out*Z', X', Y'].

    Every size is a parameter: ``sparse_shape`` (the input grid), ``encoder_channels`` (channels per block,
    one tuple per stage; its length sets the blocks per stage), ``encoder_paddings`` (one entry per block;
    only the strided conv's entry is used, as in mmdet3d), ``base_channels``, ``output_channels``.
    """

    def __init__(self, in_channels: int = 5, sparse_shape: Sequence[int] = (1440, 1440, 41),
                 base_channels: int = 16, output_channels: int = 128,
                 encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
                 encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (1, 1, 0)), (0, 0)),
                 block_type: str = "basicblock") -> None:
        super().__init__()
        if block_type not in ("basicblock", "conv_module"):
            raise ValueError(f"block_type must be 'basicblock' or 'conv_module', got {block_type!r}")
        if len(encoder_channels) != len(encoder_paddings):
            raise ValueError(f"encoder_channels has {len(encoder_channels)} stages but encoder_paddings has "
                             f"{len(encoder_paddings)}")
        self.in_channels = int(in_channels)
        self.sparse_shape = tuple(int(s) for s in sparse_shape)
        self.base_channels = int(base_channels)
        self.output_channels = int(output_channels)
        self.encoder_channels = tuple(tuple(stage) for stage in encoder_channels)
        self.encoder_paddings = tuple(tuple(stage) for stage in encoder_paddings)
        self.block_type = block_type

        self.conv_input = _conv_module(SubMConv3d(self.in_channels, self.base_channels, 3, indice_key="subm1"),
                                       self.base_channels)
        self.encoder_layers = Sequential()
        channels = self.base_channels
        last_stage = len(self.encoder_channels) - 1
        for i, stage in enumerate(self.encoder_channels):
            if len(stage) != len(self.encoder_paddings[i]):
                raise ValueError(f"stage {i}: {len(stage)} channel entries but {len(self.encoder_paddings[i])} paddings")
            blocks = []
            for j, out_channels in enumerate(stage):
                padding = _padding_triple(self.encoder_paddings[i][j])
                if block_type == "conv_module" and i != 0 and j == 0:
                    blocks.append(_conv_module(SparseConv3d(channels, out_channels, 3, stride=2, padding=padding,
                                                            indice_key=f"spconv{i + 1}"), out_channels))
                elif block_type == "conv_module":
                    blocks.append(_conv_module(SubMConv3d(channels, out_channels, 3, indice_key=f"subm{i + 1}"),
                                               out_channels))
                elif j == len(stage) - 1 and i != last_stage:
                    blocks.append(_conv_module(SparseConv3d(channels, out_channels, 3, stride=2, padding=padding,
                                                            indice_key=f"spconv{i + 1}"), out_channels))
                else:
                    blocks.append(SparseBasicBlock(channels, out_channels, BN_EPS, BN_MOMENTUM))
                channels = out_channels
            self.encoder_layers.add_module(f"encoder_layer{i + 1}", Sequential(*blocks))
        self.conv_out = _conv_module(SparseConv3d(channels, self.output_channels, (1, 1, 3), stride=(1, 1, 2),
                                                  padding=0, indice_key="spconv_down2"), self.output_channels)

    def _strided_geometry(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]]:
        """(kernel, stride, padding) of every strided conv in forward order."""
        out = []
        for stage in self.encoder_layers:
            for block in stage:
                if isinstance(block, Sequential) and isinstance(block[0], SparseConv3d):
                    conv = block[0]
                    out.append((conv.kernel_size, conv.stride, conv.padding))
        conv = self.conv_out[0]
        out.append((conv.kernel_size, conv.stride, conv.padding))
        return out

    def output_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """[B, C_out * Z', X', Y'] for this configuration's input grid."""
        shape = self.sparse_shape
        for kernel, stride, padding in self._strided_geometry():
            shape = conv_output_shape(shape, kernel, stride, padding, 1)
        return (batch_size, self.output_channels * shape[2], shape[0], shape[1])

    def build_kernel_maps(self, x: SparseTensor) -> None:
        """Build every kernel map of the network into ``x.cache`` before the layers run.

        The strided maps form a chain (each needs the previous one's output coordinates) and run on the
        calling thread; each level's submanifold map is handed to a worker thread as soon as its coordinates
        exist, so with 2 threads the two kinds overlap. The layers then find everything in the cache.
        """
        import time

        from .functional import threads
        from .kmap.build import build_strided_map, build_submanifold_map
        started = time.perf_counter()
        with threads.single_threaded_ops() as workers:
            pending = []

            def submanifold(coords, shape):
                build = lambda: build_submanifold_map(coords, x.batch_size, shape, (3, 3, 3), (1, 1, 1))  # noqa: E731
                task = lambda: x.cache.get_or_build(coords, ("subm", (3, 3, 3), (1, 1, 1)), build)  # noqa: E731
                if workers > 1:
                    pending.append(threads.worker_pool(workers).submit(task))
                else:
                    task()

            coords, shape = x.coords, x.spatial_shape
            geometry = self._strided_geometry()
            submanifold(coords, shape)
            for index, (kernel, stride, padding) in enumerate(geometry):
                key = ("conv", tuple(kernel), tuple(stride), tuple(padding), (1, 1, 1))
                coords, shape, _ = x.cache.get_or_build(coords, key, lambda c=coords, s=shape, k=kernel, t=stride,
                                                        p=padding: build_strided_map(c, x.batch_size, s, k, t, p, 1))
                if index < len(geometry) - 1:
                    submanifold(coords, shape)
            for future in pending:
                future.result()
        x.cache.prebuild_seconds = time.perf_counter() - started

    def forward_sparse(self, x: SparseTensor) -> SparseTensor:
        """The sparse output of ``conv_out`` (before densification)."""
        self.build_kernel_maps(x)
        x = self.conv_input(x)
        x = self.encoder_layers(x)
        return self.conv_out(x)

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        x = SparseTensor(feats, coords, self.sparse_shape, batch_size)
        return self.forward_sparse(sort_by_key(x)).bev()
