"""bevfusion_ros: BEVFusion camera + LiDAR perception as ROS 2 nodes."""

__version__ = "0.1.0"
