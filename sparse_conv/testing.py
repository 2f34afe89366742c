"""Reference implementations for comparisons (tests, benchmarks): the same SparseEncoder on spconv 2.x.

spconv is optional; it is imported only when these functions are called. Note: spconv's CPU scatter races
with more than one OpenMP thread; compare outputs only with one thread (torch.set_num_threads(1) and
OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import torch
from torch import nn

from .encoder import SparseEncoder
from .nn import Sequential as OurSequential
from .nn import SparseBasicBlock as OurBlock
from .nn import SparseConv3d as OurSparseConv3d


def build_spconv_encoder(encoder: SparseEncoder) -> nn.Module:
    """A spconv network with the structure and parameter names of ``encoder`` (mmdet3d layout, spconv 2.x
    weights [Cout, kx, ky, kz, Cin]), carrying a copy of ``encoder``'s weights and BN statistics."""
    import spconv.pytorch as spconv  # noqa: PLC0415 - optional dependency

    eps, momentum = 1e-3, 0.01

    class SpconvBlock(spconv.SparseModule):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)
            self.conv2 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm1d(channels, eps=eps, momentum=momentum)
            self.relu = nn.ReLU()

        def forward(self, x):
            identity = x.features
            out = self.conv1(x)
            out = out.replace_feature(self.relu(self.bn1(out.features)))
            out = self.conv2(out)
            out = out.replace_feature(self.bn2(out.features) + identity)
            return out.replace_feature(self.relu(out.features))

    def conv_module(conv) -> nn.Module:
        return spconv.SparseSequential(conv, nn.BatchNorm1d(conv.out_channels, eps=eps, momentum=momentum),
                                       nn.ReLU())

    def convert(module: nn.Module) -> nn.Module:
        if isinstance(module, OurBlock):
            return SpconvBlock(module.conv1.in_channels)
        if isinstance(module, OurSequential):
            children = [convert(child) for child in module]
            return spconv.SparseSequential(*children)
        from .nn.conv import Conv3d
        if isinstance(module, Conv3d):
            cls = spconv.SubMConv3d if module.mode == "submanifold" else spconv.SparseConv3d
            padding = tuple(k // 2 for k in module.kernel_size) if module.mode == "submanifold" else module.padding
            return cls(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                       padding=padding, bias=module.bias is not None, indice_key=module.indice_key)
        if isinstance(module, nn.BatchNorm1d):
            return nn.BatchNorm1d(module.num_features, eps=module.eps, momentum=module.momentum)
        if isinstance(module, nn.ReLU):
            return nn.ReLU()
        raise TypeError(f"no spconv counterpart for {type(module).__name__}")

    net = nn.Module()
    net.conv_input = convert(encoder.conv_input)
    layers = spconv.SparseSequential()
    for name, stage in encoder.encoder_layers.named_children():
        layers.add_module(name, convert(stage))
    net.encoder_layers = layers
    net.conv_out = convert(encoder.conv_out)
    net.sparse_shape = list(encoder.sparse_shape)

    from .weights import to_spconv_weight
    ours = encoder.state_dict()
    theirs = net.state_dict()
    conv_keys = {f"{n}.weight" for n, m in encoder.named_modules() if isinstance(m, Conv3d_type())}
    with torch.no_grad():
        for key, value in theirs.items():
            source = ours[key]
            value.copy_(to_spconv_weight(source, "spconv2") if key in conv_keys else source)
    return net


def Conv3d_type():  # noqa: N802 - small indirection to avoid an import cycle at module load
    from .nn.conv import Conv3d
    return Conv3d


def run_spconv_encoder(net: nn.Module, feats: torch.Tensor, coords: torch.Tensor, batch_size: int):
    """spconv forward up to conv_out -> (coords [M, 4] int, feats [M, C]) (sparse, spconv's row order)."""
    import spconv.pytorch as spconv  # noqa: PLC0415

    x = spconv.SparseConvTensor(feats, coords.to(torch.int32), net.sparse_shape, batch_size)
    x = net.conv_input(x)
    x = net.encoder_layers(x)
    x = net.conv_out(x)
    return x.indices, x.features


def sort_by_coords(coords: torch.Tensor, feats: torch.Tensor, spatial_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ordered by (b, x, y, z), for comparing two implementations' outputs."""
    c = coords.to(torch.int64)
    x, y, z = spatial_shape
    keys = ((c[:, 0] * x + c[:, 1]) * y + c[:, 2]) * z + c[:, 3]
    order = torch.argsort(keys)
    return c[order], feats[order]


def random_sites(batch_size: int, shape, density: float, generator: torch.Generator) -> torch.Tensor:
    """Unique (b, x, y, z) int64 coordinates, about ``density`` of the grid active (at least one)."""
    mask = torch.rand((batch_size,) + tuple(shape), generator=generator) < density
    mask.view(-1)[0] = True
    return torch.nonzero(mask)


def shuffled(coords: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return coords[torch.randperm(coords.shape[0], generator=generator)]


def dense_from(coords: torch.Tensor, feats: torch.Tensor, batch_size: int, shape) -> torch.Tensor:
    """[B, C, X, Y, Z] zero-filled."""
    out = feats.new_zeros((batch_size,) + tuple(shape) + (feats.shape[1],))
    out[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]] = feats
    return out.permute(0, 4, 1, 2, 3)


def gather_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rows of a dense [B, C, X, Y, Z] tensor at coords -> [N, C]."""
    c = coords.to(torch.int64)
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(float(b.abs().max()), 1e-12) if b.numel() else 1.0
    return float((a - b).abs().max()) / scale if a.numel() else 0.0
