"""tests/ros: real rclpy fixtures (see helpers.py)."""
from tests.ros.helpers import node, ros_context  # noqa: F401 - fixtures
