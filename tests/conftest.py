"""Test-session setup shared by every test.

ROS isolation: each pytest session picks its own ROS_DOMAIN_ID and keeps discovery on localhost, so
parallel sessions (or a developer's running graph) never cross-talk with the tests' nodes.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

from bevfusion_ros.paths import nuscenes_sample_dir  # noqa: E402


@pytest.fixture(scope="session")
def nuscenes_sample() -> Path:
    """The real nuScenes keyframe in ../shared/data (skips cleanly where it is absent)."""
    path = nuscenes_sample_dir()
    if not (path / "sample.json").is_file():
        pytest.skip(f"real nuScenes sample not found at {path} (set BEVFUSION_SHARED_DATA)")
    return path
