"""One description of the node graph: the launch file and `bevfusion-ros launch` resolve the same nodes,
parameter files and remappings."""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from bevfusion_ros.graph import LAUNCH_ARGUMENTS, resolve_graph
from bevfusion_ros.launch_graph import NODE_ENV, parse_assignments, run
from bevfusion_ros.paths import REPO_ROOT


def test_default_graph_is_perception_plus_calibration_with_the_package_parameters():
    nodes = {n.spec.name: n for n in resolve_graph("perception")}
    assert list(nodes) == ["perception", "calibration"]
    assert nodes["perception"].params_files == [REPO_ROOT / "config" / "perception.yaml"]
    args = nodes["perception"].ros_args()
    assert args[:3] == ["--ros-args", "-r", "__node:=perception"]
    assert "-r" in args and not any(a.startswith("/LIDAR_TOP:=") for a in args)   # identity remaps left out


def test_calibration_switch_and_remapping_arguments():
    nodes = resolve_graph("perception", {"calibration": "false", "lidar_topic": "/sensing/points",
                                         "camera_namespace": "/sensing", "namespace": "car1"})
    assert [n.spec.name for n in nodes] == ["perception"]
    remaps = dict(nodes[0].remappings)
    assert remaps["/LIDAR_TOP"] == "/sensing/points"
    assert remaps["/CAM_BACK/image_rect_compressed"] == "/sensing/CAM_BACK/image_rect_compressed"
    assert remaps["/CAM_BACK/camera_info"] == "/sensing/CAM_BACK/camera_info"
    assert "__ns:=/car1" in nodes[0].ros_args()


def test_unknown_arguments_and_missing_parameter_files_are_clear_errors():
    with pytest.raises(KeyError, match="unknown launch argument"):
        resolve_graph("perception", {"lidar": "/x"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_graph("perception", {"params_file": "/nonexistent.yaml"})
    assert parse_assignments(["a:=1", "b=2"]) == {"a": "1", "b": "2"}


def test_launch_dry_run_prints_one_command_per_node(capsys):
    import argparse
    from bevfusion_ros.launch_graph import add_arguments
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["perception", "--no-calibration", "--dry-run",
                                  "--arg", "lidar_topic:=/points"])) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "-m bevfusion_ros.nodes.perception" in lines[0] and "/LIDAR_TOP:=/points" in lines[0]


def test_launch_file_builds_the_same_nodes_as_launch_graph(monkeypatch):
    """Runs launch/perception.launch.py against minimal stand-ins of launch/launch_ros (not on PyPI)."""
    created = []

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class Record:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class DeclareLaunchArgument(Record):
        pass

    class SetEnvironmentVariable(Record):
        pass

    class Node(Record):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            created.append(kwargs)

    modules = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda actions: actions),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=DeclareLaunchArgument, OpaqueFunction=Record,
                                                SetEnvironmentVariable=SetEnvironmentVariable),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration,
                                                      EnvironmentVariable=Record),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=Node),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("perception_launch", REPO_ROOT / "launch" / "perception.launch.py")
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    actions = launch_file.generate_launch_description()
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions if isinstance(a, DeclareLaunchArgument)}
    assert declared == {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    # the same node environment as bevfusion-ros launch, each a default the user's own value overrides
    environment = {a.args[0]: a.args[1].kwargs["default_value"] for a in actions
                   if isinstance(a, SetEnvironmentVariable)}
    assert environment == NODE_ENV and all(a.args[1].args == (a.args[0],) for a in actions
                                           if isinstance(a, SetEnvironmentVariable))
    context = dict(declared, calibration="false", lidar_topic="/points")
    actions[-1].kwargs["function"](context)
    expected = resolve_graph("perception", context)
    assert [n["name"] for n in created] == [n.spec.name for n in expected]
    assert created[0]["executable"] == "perception_node"
    assert created[0]["parameters"] == [str(p) for p in expected[0].params_files]
    assert ("/LIDAR_TOP", "/points") in created[0]["remappings"]


def test_nodes_start_with_the_graph_environment_and_a_users_value_wins(monkeypatch):
    from bevfusion_ros.launch_graph import graph_environment

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    env = graph_environment()
    assert env["MALLOC_ARENA_MAX"] == NODE_ENV["MALLOC_ARENA_MAX"]
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/etc/my_profile.xml"


def test_the_fast_dds_profile_gives_shared_memory_room_for_a_frame_of_sensor_data():
    import xml.etree.ElementTree as ElementTree
    from pathlib import Path

    path = Path(NODE_ENV["FASTDDS_DEFAULT_PROFILES_FILE"])
    ns = {"dds": "http://www.eprosima.com"}
    root = ElementTree.parse(path).getroot()
    shm = [d for d in root.iterfind(".//dds:transport_descriptor", ns) if d.findtext("dds:type", None, ns) == "SHM"]
    assert len(shm) == 1
    # six ~200 kB JPEGs, their camera_infos and a ~0.7 MB sweep, several times over
    assert int(shm[0].findtext("dds:segment_size", None, ns)) >= 8 * 2**20
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//dds:useBuiltinTransports", None, ns) == "false"
