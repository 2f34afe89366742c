"""Sensor messages -> the frame assembler: the perception node's ingestion, in one place.

Works on rclpy messages and on rosbags' dataclasses alike, so the node (live topics) and the replay
equivalence tests (messages read straight from a bag) feed the assembler through the same code.
Errors are raised, not logged: :class:`~bevfusion_ros.perception.assembler.InputRejected` (with a
``reason``), ``PointCloudError`` (``bad_cloud``), ``CameraInfoError`` (``bad_camera_info``), ``ValueError`` /
``LookupError`` for a bad transform. The node turns each into a counted, rate-limited log line.
"""
from __future__ import annotations

import threading
from typing import Any

from bevfusion_ros.perception.assembler import FrameAssembler, Sweep
from bevfusion_ros.ros.camera_info import camera_info_to_intrinsics
from bevfusion_ros.ros.image import compressed_image_to_rgb, image_to_rgb
from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
from bevfusion_ros.ros.tf_buffer import TFBuffer
from bevfusion_ros.ros.time import header_to_us


class LockedTransforms:
    """A TF buffer shared by the TF callbacks and the worker thread, behind one lock."""

    def __init__(self, buffer: TFBuffer | None = None):
        self.buffer = buffer or TFBuffer()
        self.lock = threading.Lock()

    def add_message(self, msg: Any, static: bool) -> int:
        with self.lock:
            return self.buffer.add_message(msg, static=static)

    def lookup(self, target_frame: str, source_frame: str, stamp_us: int | None):
        with self.lock:
            return self.buffer.lookup(target_frame, source_frame, stamp_us)

    def can_transform(self, target_frame: str, source_frame: str, stamp_us: int | None = None) -> bool:
        with self.lock:
            return self.buffer.can_transform(target_frame, source_frame, stamp_us)

    def time_range(self, child: str):
        with self.lock:
            return self.buffer.time_range(child)


class MessageIngest:
    """Converts each message and hands it to the assembler / TF buffer."""

    def __init__(self, assembler: FrameAssembler, transforms: LockedTransforms):
        self.assembler = assembler
        self.transforms = transforms

    def lidar(self, msg: Any, received_ns: int = 0) -> tuple[Sweep, list[str]]:
        """PointCloud2 -> buffered sweep; returns it with its notes (non-finite points, oversize, ...)."""
        points, nonfinite = pointcloud2_to_xyzi(msg)
        sweep = self.assembler.add_lidar(header_to_us(msg.header), str(msg.header.frame_id), points, received_ns)
        notes = list(sweep.notes)
        if nonfinite:
            notes.append("nonfinite_points")
        return sweep, notes

    def image(self, camera: str, msg: Any) -> None:
        """CompressedImage or Image -> buffered; decoded only if a frame uses it."""
        decode = image_to_rgb if hasattr(msg, "encoding") else compressed_image_to_rgb
        self.assembler.add_image(camera, header_to_us(msg.header), str(msg.header.frame_id),
                                 lambda m=msg: decode(m))

    def camera_info(self, camera: str, msg: Any) -> None:
        intrinsics = camera_info_to_intrinsics(msg)
        self.assembler.set_camera_info(camera, intrinsics.K, intrinsics.width, intrinsics.height,
                                       intrinsics.frame_id or camera, header_to_us(msg.header))

    def tf(self, msg: Any, static: bool) -> int:
        return self.transforms.add_message(msg, static)
