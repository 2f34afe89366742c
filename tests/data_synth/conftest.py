"""One tiny synthetic dataset per test session (3 keyframes, cameras at 2 Hz), shared by the tests here."""
from __future__ import annotations

from pathlib import Path

import pytest

from bevfusion_ros.data.synth.generate import SynthConfig, generate

TINY = dict(splits=[("mini_val", 1)], seed=0, keyframes=3, camera_hz=2, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "nuscenes"
    summary = generate(SynthConfig(out=root, **TINY))
    return root, summary


@pytest.fixture(scope="session")
def tiny_nusc(tiny_dataset):
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    return open_nuscenes(tiny_dataset[0], "v1.0-mini")
