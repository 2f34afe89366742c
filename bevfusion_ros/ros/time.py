"""builtin_interfaces/Time <-> nuScenes integer microseconds (ARCHITECTURE.md §4: one helper).

The arithmetic lives in :mod:`bevfusion_ros.geometry` (``stamp_to_us`` / ``us_to_stamp``); this module
only adapts it to message objects. It works on rclpy messages and on rosbags' message dataclasses alike
(both carry ``sec`` and ``nanosec``).
"""
from __future__ import annotations

from typing import Any

from bevfusion_ros import geometry


def time_to_us(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec``/``nanosec``) -> integer microseconds."""
    return geometry.stamp_to_us(stamp.sec, stamp.nanosec)


def header_to_us(header: Any) -> int:
    """``std_msgs/Header`` -> its stamp in integer microseconds."""
    return time_to_us(header.stamp)


def us_to_time(timestamp_us: int):
    """Integer microseconds -> an rclpy ``builtin_interfaces.msg.Time``."""
    from builtin_interfaces.msg import Time

    sec, nanosec = geometry.us_to_stamp(timestamp_us)
    return Time(sec=sec, nanosec=nanosec)


def us_to_ns(timestamp_us: int) -> int:
    """Integer microseconds -> integer nanoseconds (rosbag2 and rclpy.time.Time use nanoseconds)."""
    return int(timestamp_us) * 1000


def ns_to_us(timestamp_ns: int) -> int:
    """Integer nanoseconds -> integer microseconds, rounded to nearest like :func:`time_to_us`."""
    return (int(timestamp_ns) + 500) // 1000


def make_header(timestamp_us: int, frame_id: str):
    """An rclpy ``std_msgs.msg.Header`` stamped at ``timestamp_us`` in ``frame_id``."""
    from std_msgs.msg import Header

    return Header(stamp=us_to_time(timestamp_us), frame_id=frame_id)
