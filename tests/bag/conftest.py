"""tests/bag: a tiny nuScenes-format dataset (from the real keyframe when present) and its converted bag."""
from __future__ import annotations

import pytest

from bevfusion_ros.paths import nuscenes_sample_dir
from tests.bag.tiny_dataset import build_tiny_dataset
from tests.ros.helpers import node, ros_context  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    sample = nuscenes_sample_dir()
    root = tmp_path_factory.mktemp("tiny_nuscenes")
    return build_tiny_dataset(root, sample if (sample / "sample.json").is_file() else None, n_keyframes=3)


@pytest.fixture(scope="session")
def tiny_bag(tiny_dataset, tmp_path_factory):
    from bevfusion_ros.data.bag_convert import convert_scene

    out = tmp_path_factory.mktemp("bags") / "tiny"
    stats = convert_scene(tiny_dataset["dataroot"], tiny_dataset["version"], tiny_dataset["scene"], out,
                          progress=False)
    return out, stats
