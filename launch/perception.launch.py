"""ros2 launch bevfusion_ros perception.launch.py [params_file:=...] [calibration:=false] [lidar_topic:=...]

The graph (nodes, parameter files, remappings, switches) is resolved by ``bevfusion_ros.graph.resolve_graph``
from the launch arguments: the same function ``bevfusion-ros launch perception`` uses where launch_ros is not
installed, so both start exactly the same nodes with the same parameters and remappings.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from bevfusion_ros.graph import LAUNCH_ARGUMENTS, resolve_graph
from bevfusion_ros.launch_graph import NODE_ENV


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [Node(package="bevfusion_ros", executable=node.spec.executable, name=node.spec.name,
                 namespace=node.namespace or None, output="screen", emulate_tty=True,
                 parameters=[str(path) for path in node.params_files],
                 remappings=[(src, dst) for src, dst in node.remappings if src != dst])
            for node in resolve_graph("perception", values)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in LAUNCH_ARGUMENTS.items()]
        # the nodes' environment (launch_graph.NODE_ENV: DDS transports, malloc arenas); a user's value wins
        + [SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=value))
           for name, value in NODE_ENV.items()]
        + [OpaqueFunction(function=_nodes)])
