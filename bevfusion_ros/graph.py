"""The perception node graph, described once.

Both ``launch/perception.launch.py`` (launch_ros, on a ROS 2 install) and ``bevfusion-ros launch perception``
(:mod:`bevfusion_ros.launch_graph`, where launch_ros is missing) read this description: which nodes run,
from which executable/module, with which parameter files, remappings and switches. Nothing about the
graph is written down twice.

Remappings are templates over the launch arguments (``{lidar_topic}``, ``{camera_namespace}``, ...): the
launch file turns them into substitutions, launch_graph into strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.paths import share_dir

# name -> (default, description). Every launch argument of the perception graph.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "params_file": ("config/perception.yaml", "perception node parameters (relative: package share folder)"),
    "calibration": ("true", "also run the SemAlign calibration node (true/false)"),
    "calibration_params_file": ("config/calibration.yaml", "calibration node parameters, if the file exists"),
    "lidar_topic": ("/LIDAR_TOP", "LiDAR PointCloud2 topic"),
    "camera_namespace": ("", "prefix of the camera topics: <prefix>/CAM_FRONT/image_rect_compressed, ..."),
    "tf_topic": ("/tf", "dynamic transforms (map -> base_link)"),
    "tf_static_topic": ("/tf_static", "static transforms (base_link -> sensors)"),
    "namespace": ("", "namespace of the graph's nodes"),
}

_CAMERA_TOPICS = ("image_rect_compressed", "image_rect", "camera_info")


def _perception_remaps() -> list[tuple[str, str]]:
    remaps = [("/LIDAR_TOP", "{lidar_topic}"), ("/tf", "{tf_topic}"), ("/tf_static", "{tf_static_topic}")]
    for camera in CAMERA_NAMES:
        for suffix in _CAMERA_TOPICS:
            remaps.append((f"/{camera}/{suffix}", f"{{camera_namespace}}/{camera}/{suffix}"))
    return remaps


@dataclass
class NodeSpec:
    name: str                                   # node name (topics: /<namespace>/<name>/...)
    executable: str                             # ament executable (setup.py console script)
    module: str                                 # python -m <module> runs the same main()
    params_file_arg: str                        # launch argument holding its parameter file
    remappings: list[tuple[str, str]] = field(default_factory=list)   # (from, template over arguments)
    enabled_by: str | None = None               # launch argument switching the node on/off
    optional_params: bool = False               # the parameter file may be absent


PERCEPTION_GRAPH: tuple[NodeSpec, ...] = (
    NodeSpec(name="perception", executable="perception_node", module="bevfusion_ros.nodes.perception",
             params_file_arg="params_file", remappings=_perception_remaps()),
    NodeSpec(name="calibration", executable="calibration_node", module="bevfusion_ros.nodes.calibration",
             params_file_arg="calibration_params_file", enabled_by="calibration", optional_params=True,
             remappings=_perception_remaps()),
)

GRAPHS: dict[str, tuple[NodeSpec, ...]] = {"perception": PERCEPTION_GRAPH}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def template_parts(template: str) -> list[tuple[str, str]]:
    """Split a remap template into ``("text", s)`` and ``("arg", name)`` parts (for launch substitutions)."""
    parts, pos = [], 0
    for match in _PLACEHOLDER.finditer(template):
        if match.start() > pos:
            parts.append(("text", template[pos: match.start()]))
        parts.append(("arg", match.group(1)))
        pos = match.end()
    if pos < len(template):
        parts.append(("text", template[pos:]))
    return parts


def resolve_arguments(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Launch arguments with defaults filled in; unknown names are an error."""
    values = {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    for name, value in (overrides or {}).items():
        if name not in LAUNCH_ARGUMENTS:
            raise KeyError(f"unknown launch argument {name!r} (known: {sorted(LAUNCH_ARGUMENTS)})")
        values[name] = str(value)
    return values


def is_true(value: str) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else share_dir() / p


@dataclass
class ResolvedNode:
    spec: NodeSpec
    params_files: list[Path]
    remappings: list[tuple[str, str]]
    namespace: str

    def ros_args(self) -> list[str]:
        """``--ros-args ...`` for running this node as ``python -m module`` (what launch_ros would pass)."""
        args = ["--ros-args", "-r", f"__node:={self.spec.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for path in self.params_files:
            args += ["--params-file", str(path)]
        for src, dst in self.remappings:
            if src != dst:
                args += ["-r", f"{src}:={dst}"]
        return args


def resolve_graph(graph: str = "perception", arguments: dict[str, str] | None = None) -> list[ResolvedNode]:
    """The nodes of ``graph`` that are switched on, with concrete files and remappings."""
    values = resolve_arguments(arguments)
    namespace = values["namespace"].strip()
    if namespace and not namespace.startswith("/"):
        namespace = "/" + namespace
    nodes = []
    for spec in GRAPHS[graph]:
        if spec.enabled_by and not is_true(values[spec.enabled_by]):
            continue
        params = resolve_path(values[spec.params_file_arg])
        if not params.is_file() and not spec.optional_params:
            raise FileNotFoundError(f"parameter file {params} ({spec.params_file_arg}) does not exist")
        remaps = [(src, "".join(values[v] if kind == "arg" else v for kind, v in template_parts(dst)))
                  for src, dst in spec.remappings]
        nodes.append(ResolvedNode(spec, [params] if params.is_file() else [], remaps, namespace))
    return nodes
