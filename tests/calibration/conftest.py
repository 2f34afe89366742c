"""Shared fixtures for the SemAlign tests: a small ray-cast toy scene with exact semantics and a fast
calibrator configuration (fewer candidates and iterations than the default, same algorithm)."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros.calibration.refine import RefineStage
from bevfusion_ros.calibration.search import SearchRound
from bevfusion_ros.calibration.semalign import CalibrationConfig


@pytest.fixture(scope="session")
def toy():
    """(frames, truth): two toy scenes seen by the 4-camera toy rig at 320 x 180."""
    import torch
    torch.set_num_threads(1)
    from bevfusion_ros.calibration.toyscene import toy_frames
    return toy_frames(num_frames=2, seed=0, size=(320, 180))


def _fast_config(**overrides) -> CalibrationConfig:
    base = dict(
        search=(SearchRound(samples=512, scale=1.0, level=0, max_points=64, keep=6),
                SearchRound(samples=32, scale=0.25, level=1, max_points=128, keep=3),
                SearchRound(samples=32, scale=0.08, level=2, max_points=192, keep=2)),
        refine=(RefineStage(level=1, iterations=40, lr_rot_deg=0.3, lr_trans_m=0.02, max_points=256),
                RefineStage(level=2, iterations=60, lr_rot_deg=0.1, lr_trans_m=0.01)),
        max_points_per_group=384, rot_range_deg=8.0, trans_range_m=0.4)
    base.update(overrides)
    return CalibrationConfig(**base)


def _perturb(T: np.ndarray, rot_deg: tuple[float, float, float], trans_m: tuple[float, float, float]) -> np.ndarray:
    from bevfusion_ros.calibration.calib_io import rpy_to_matrix
    delta = np.eye(4)
    delta[:3, :3] = rpy_to_matrix(*np.radians(rot_deg))
    delta[:3, 3] = trans_m
    return delta @ T


@pytest.fixture
def fast_config():
    return _fast_config


@pytest.fixture
def perturb():
    return _perturb
