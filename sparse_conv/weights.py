"""Load spconv-layout checkpoints (mmdet3d / BEVFusion SparseEncoder) into sparse_conv modules.

Parameter names are the same as mmdet3d's (``conv_input.0.weight``, ``encoder_layers.encoder_layer1.0.conv1.
weight``, ``...bn1.running_mean``, ``conv_out.0.weight``); a checkpoint's key prefix (for example
``encoders.lidar.backbone.``) is found and stripped automatically. Convolution weights are converted:

- spconv 1.x: ``[kx, ky, kz, Cin, Cout]`` (our own layout, copied as is)
- spconv 2.x: ``[Cout, kx, ky, kz, Cin]`` -> permuted to ``[kx, ky, kz, Cin, Cout]``
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from .nn.conv import Conv3d

LAYOUTS = ("spconv1", "spconv2")


def convert_conv_weight(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """A spconv conv weight in ``layout`` -> ours [kx, ky, kz, Cin, Cout]."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if weight.dim() != 5:
        raise ValueError(f"a 3D sparse conv weight has 5 dimensions, got shape {tuple(weight.shape)}")
    if layout == "spconv2":
        return weight.permute(1, 2, 3, 4, 0).contiguous()
    return weight.contiguous()


def to_spconv_weight(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """Ours [kx, ky, kz, Cin, Cout] -> spconv ``layout`` (the inverse of convert_conv_weight)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return weight.permute(4, 0, 1, 2, 3).contiguous() if layout == "spconv2" else weight.contiguous()


def _find_prefix(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> str:
    anchor = next(iter(ours))
    if anchor in theirs:
        return ""
    for key in theirs:
        if key.endswith("." + anchor):
            return key[: -len(anchor)]
    raise KeyError(f"state_dict has no key ending in {anchor!r}: not a checkpoint of this module")


def load_spconv_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], layout: str = "spconv2",
                           prefix: Optional[str] = None, strict: bool = True) -> list[str]:
    """Copy ``state_dict`` (spconv layout ``layout``) into ``module``; returns the keys of ``module`` not found.

    strict: raise KeyError if any parameter/buffer of ``module`` is missing from the checkpoint.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    ours = module.state_dict()
    if prefix is None:
        prefix = _find_prefix(ours, state_dict)
    conv_weights = {f"{name}.weight" for name, sub in module.named_modules() if isinstance(sub, Conv3d)}
    converted: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for key, target in ours.items():
        source = state_dict.get(prefix + key)
        if source is None:
            missing.append(key)
            continue
        source = torch.as_tensor(source)
        if key in conv_weights:
            source = convert_conv_weight(source, layout)
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(f"{prefix + key}: checkpoint shape {tuple(source.shape)} (after {layout} conversion) "
                             f"does not match the module's {tuple(target.shape)}")
        converted[key] = source.to(target.dtype)
    if strict and missing:
        raise KeyError(f"checkpoint lacks {len(missing)} of the module's keys (prefix {prefix!r}), e.g. {missing[:3]}")
    module.load_state_dict(converted, strict=False)
    return missing
