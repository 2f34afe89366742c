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


JPEG_REDUCED_FLAGS = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def decode_compressed_reduced(msg: Any, reduction: int):
    """A CompressedImage decoded at 1/``reduction`` scale by libjpeg's DCT scaling (several times faster than
    a full decode followed by a resize); PNG and other formats are decoded by OpenCV the same way."""
    import cv2
    import numpy as np

    from bevfusion_ros.ros.image import ImageDecodeError

    buffer = msg.data.view(np.uint8).reshape(-1) if isinstance(msg.data, np.ndarray) else \
        np.frombuffer(msg.data, dtype=np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError(f"CompressedImage (format {getattr(msg, 'format', '')!r}) has no data")
    image = cv2.imdecode(buffer, getattr(cv2, JPEG_REDUCED_FLAGS[reduction]))
    if image is None:
        raise ImageDecodeError(f"CompressedImage ({buffer.size} bytes) could not be decoded: corrupt or unsupported")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class MessageIngest:
    """Converts each message and hands it to the assembler / TF buffer. Compressed images are decoded at
    1/``assembler.config.image_reduction`` scale when that is > 1 (the assembler scales K to match)."""

    def __init__(self, assembler: FrameAssembler, transforms: LockedTransforms):
        self.assembler = assembler
        self.transforms = transforms
        if assembler.config.image_reduction not in (1, *JPEG_REDUCED_FLAGS):
            raise ValueError(f"image_reduction must be 1, 2, 4 or 8, got {assembler.config.image_reduction}")

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
        reduction = self.assembler.config.image_reduction
        if hasattr(msg, "encoding"):
            decode = image_to_rgb
        elif reduction > 1:
            def decode(m):
                return decode_compressed_reduced(m, reduction)
        else:
            decode = compressed_image_to_rgb
        self.assembler.add_image(camera, header_to_us(msg.header), str(msg.header.frame_id),
                                 lambda m=msg: decode(m))

    def camera_info(self, camera: str, msg: Any) -> None:
        intrinsics = camera_info_to_intrinsics(msg)
        self.assembler.set_camera_info(camera, intrinsics.K, intrinsics.width, intrinsics.height,
                                       intrinsics.frame_id or camera, header_to_us(msg.header))

    def tf(self, msg: Any, static: bool) -> int:
        return self.transforms.add_message(msg, static)
