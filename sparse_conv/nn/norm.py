"""Normalisation and activation on sparse features."""
from __future__ import annotations

import torch
from torch import nn

from ..tensor import SparseTensor


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the feature rows of a SparseTensor (state-dict keys as nn.BatchNorm1d).

    An empty tensor passes through unchanged (no statistics are updated).
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        if len(x) == 0:
            return x
        return x.replace_feature(super().forward(x.feats))


class ReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_feature(torch.relu(x.feats) if not self.inplace else x.feats.relu_())
