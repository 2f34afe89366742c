"""ROS-free logic of the perception node: frame assembly, diagnostics, the drop-oldest worker.

Nothing here imports rclpy: the node (``bevfusion_ros.nodes.perception``) converts messages to numpy and
calls into these classes, and tests drive them directly.
"""
