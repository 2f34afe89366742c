"""Inference fusions: BatchNorm folded into the preceding conv, ReLU (and a block's residual add) fused."""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from .nn.container import Sequential, SparseBasicBlock
from .nn.conv import Conv3d
from .nn.norm import BatchNorm, ReLU


@torch.no_grad()
def fold_batchnorm(conv: Conv3d, bn: nn.BatchNorm1d) -> None:
    """conv <- bn(conv) in eval mode: weight * scale per output channel, bias = beta - mean * scale (+ b * scale)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    conv.weight.mul_(scale)
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.clone())
    else:
        conv.bias.mul_(scale).add_(shift)


def _fuse_sequential(seq: Sequential) -> Sequential:
    names = list(seq._modules.keys())
    kept: "OrderedDict[str, nn.Module]" = OrderedDict()
    i = 0
    while i < len(names):
        module = seq._modules[names[i]]
        if isinstance(module, Conv3d):
            conv_name = names[i]
            if i + 1 < len(names) and isinstance(seq._modules[names[i + 1]], BatchNorm):
                fold_batchnorm(module, seq._modules[names[i + 1]])
                i += 1
            if i + 1 < len(names) and isinstance(seq._modules[names[i + 1]], ReLU):
                module.fused_relu = True
                i += 1
            kept[conv_name] = module
        else:
            kept[names[i]] = _fuse(module)
        i += 1
    return Sequential(kept)


def _fuse(module: nn.Module) -> nn.Module:
    if isinstance(module, Sequential):
        return _fuse_sequential(module)
    if isinstance(module, SparseBasicBlock):
        fold_batchnorm(module.conv1, module.bn1)
        fold_batchnorm(module.conv2, module.bn2)
        module.conv1.fused_relu = True
        module.conv2.fused_relu = True
        module.bn1 = nn.Identity()
        module.bn2 = nn.Identity()
        module.fused = True
        return module
    for name, child in list(module.named_children()):
        setattr(module, name, _fuse(child))
    return module


def fuse_for_inference(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with every Conv3d-BatchNorm(-ReLU) folded into one conv.

    The original is left untouched. Outputs equal the eval-mode original up to float rounding.
    """
    fused = copy.deepcopy(module).eval()
    fused = _fuse(fused)
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused
