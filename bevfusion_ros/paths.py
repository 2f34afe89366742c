"""Where things live: the package share folder and the shared real-data folder.

The real nuScenes sample and benchmark clouds are not in the repository (nuScenes is CC BY-NC-SA 4.0,
kept outside the repo): they are read through one setting, ``BEVFUSION_SHARED_DATA``, defaulting to
``../shared/data`` next to the checkout. Tests that need them skip with a reason where they are absent.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    return Path(os.environ.get("BEVFUSION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def nuscenes_sample_dir() -> Path:
    """The single real nuScenes keyframe (six JPEGs, one LIDAR_TOP sweep, sample.json)."""
    return shared_data_dir() / "nuscenes-sample"


def share_dir() -> Path:
    """Data folders (config/, models/, calib/, launch/): the source tree, or share/bevfusion_ros when
    installed by colcon without the source tree next to the modules."""
    if (REPO_ROOT / "config").is_dir():
        return REPO_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore
        return Path(get_package_share_directory("bevfusion_ros"))
    except Exception:  # noqa: BLE001 - no ament index: fall back to the source layout
        return REPO_ROOT
