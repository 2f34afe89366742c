"""Model-test setup: tests/model on sys.path (for model_helpers), 2 threads, fixed seed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)   # the suite shares 2 cores with other jobs; 1 thread avoids OpenMP spin-waits
    torch.manual_seed(0)
