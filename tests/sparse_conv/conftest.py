"""sparse_conv tests run single-threaded unless a test says otherwise: tiny ops on a loaded machine pay for
OpenMP barriers with more threads, and spconv (the reference) is only exact with one thread."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
