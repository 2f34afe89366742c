"""The separable 3x3 max pooling equals torch's max_pool2d exactly (values, NaN, -inf padding, odd sizes)."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from bevfusion_ros.model.maxpool import MaxPool3x3, max_pool3x3


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(1, 10, 90, 90), (6, 16, 48, 128), (2, 3, 7, 5), (1, 1, 1, 1)])
def test_equals_max_pool2d(stride, shape):
    x = torch.randn(shape) - 3.0       # all negative where it matters: the padding must be -inf, not 0
    x.view(-1)[:: 17] = float("nan")
    want = F.max_pool2d(x, 3, stride, 1)
    got = max_pool3x3(x, stride)
    assert got.shape == want.shape
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_module_keeps_the_native_operator_for_training_and_export():
    pool = MaxPool3x3(2)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    pool(x).sum().backward()           # native path: gradients as max_pool2d gives them
    assert x.grad is not None and int((x.grad != 0).sum()) <= pool(x).numel()
    with torch.inference_mode():
        assert torch.equal(pool(x.detach()), F.max_pool2d(x.detach(), 3, 2, 1))
    with pytest.raises(ValueError, match="stride"):
        max_pool3x3(x.detach(), 3)
