"""ament_python package description for bevfusion_ros.

One setup.py serves both worlds: `colcon build` on a ROS 2 install and `pip install -e .` in the
project's venv (where ROS 2 comes from PyPI wheels). Data folders are installed to
share/bevfusion_ros/ so nodes and launch files find them the same way in both.
"""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "bevfusion_ros"


def data_files_of(folder: str) -> list[tuple[str, list[str]]]:
    """(destination, files) pairs that mirror `folder` under share/bevfusion_ros/."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        if Path(path).is_file():
            dest = str(Path("share") / PACKAGE / Path(path).parent)
            entries.setdefault(dest, []).append(path)
    return list(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["bevfusion_ros", "bevfusion_ros.*", "sparse_conv", "sparse_conv.*",
                                    "bev_pool", "bev_pool.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *data_files_of("launch"),
        *data_files_of("config"),
        *data_files_of("models"),
        *data_files_of("calib"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="bevfusion_ros developers",
    maintainer_email="dev@bevfusion-ros.invalid",
    description="BEVFusion camera + LiDAR perception as ROS 2 nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bevfusion-ros = bevfusion_ros.cli:main",
            "perception_node = bevfusion_ros.nodes.perception:main",
            "calibration_node = bevfusion_ros.nodes.calibration:main",
            "player_node = bevfusion_ros.nodes.player:main",
        ],
    },
)
