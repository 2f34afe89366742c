"""sensor_msgs/CompressedImage and sensor_msgs/Image -> H x W x 3 uint8 RGB (and back, for tests/tools).

Decoding uses OpenCV (``cv2.imdecode`` for JPEG/PNG). Raw images honour ``encoding``, ``step`` (row
padding) and ``is_bigendian`` (16-bit). Anything undecodable raises :class:`ImageDecodeError` naming the
encoding or format, so the node can log one line and mask the camera.
Works on rclpy messages and rosbags' dataclasses alike.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np


class ImageDecodeError(ValueError):
    """A corrupt or unsupported image message."""


# encoding -> (channels, numpy dtype, channel order)
RAW_ENCODINGS: dict[str, tuple[int, np.dtype, str]] = {
    "rgb8": (3, np.dtype(np.uint8), "rgb"),
    "bgr8": (3, np.dtype(np.uint8), "bgr"),
    "rgba8": (4, np.dtype(np.uint8), "rgba"),
    "bgra8": (4, np.dtype(np.uint8), "bgra"),
    "mono8": (1, np.dtype(np.uint8), "mono"),
    "8UC1": (1, np.dtype(np.uint8), "mono"),
    "8UC3": (3, np.dtype(np.uint8), "bgr"),
    "8UC4": (4, np.dtype(np.uint8), "bgra"),
    "mono16": (1, np.dtype(np.uint16), "mono"),
    "16UC1": (1, np.dtype(np.uint16), "mono"),
    "rgb16": (3, np.dtype(np.uint16), "rgb"),
    "bgr16": (3, np.dtype(np.uint16), "bgr"),
}


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage (JPEG, PNG, anything cv2.imdecode reads) -> H x W x 3 uint8 RGB."""
    buffer = _buffer(msg.data)
    fmt = str(getattr(msg, "format", "") or "")
    if buffer.size == 0:
        raise ImageDecodeError(f"CompressedImage (format {fmt!r}) has no data")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"CompressedImage (format {fmt!r}, {buffer.size} bytes) could not be decoded: "
                               f"corrupt or unsupported data")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_to_rgb(msg: Any) -> np.ndarray:
    """Raw Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1/3/4, 16UC1, rgb16, bgr16) -> H x W x 3 uint8
    RGB. 16-bit images are scaled to 8 bit by their top byte; mono is replicated to three channels."""
    encoding = str(msg.encoding)
    if encoding not in RAW_ENCODINGS:
        raise ImageDecodeError(f"unsupported Image encoding {encoding!r} (supported: {sorted(RAW_ENCODINGS)})")
    channels, dtype, order = RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f"Image step {step} is smaller than width * bytes per pixel = {row_bytes} "
                               f"({encoding}, width {width})")
    buffer = _buffer(msg.data)
    if buffer.size < step * height:
        raise ImageDecodeError(f"Image data is truncated: {buffer.size} bytes, expected step * height = "
                               f"{step} * {height} = {step * height}")
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    pixels = pixels.reshape(height, width, channels)
    if dtype.itemsize == 2:
        pixels = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    if order == "mono":
        return np.repeat(pixels, 3, axis=2)
    if order in ("bgr", "bgra"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """Either message type -> H x W x 3 uint8 RGB (dispatches on ``format`` vs ``encoding``)."""
    if hasattr(msg, "encoding"):
        return image_to_rgb(msg)
    if hasattr(msg, "format"):
        return compressed_image_to_rgb(msg)
    raise ImageDecodeError(f"{type(msg).__name__} is neither a sensor_msgs/Image nor a CompressedImage")


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """H x W x 3 uint8 RGB -> JPEG bytes."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR),
                               [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ImageDecodeError("JPEG encoding failed")
    return encoded.tobytes()


def rgb_to_compressed_image(rgb: np.ndarray, frame_id: str, stamp_us: int = 0, quality: int = 90):
    """An rclpy CompressedImage (JPEG) of an RGB image."""
    from sensor_msgs.msg import CompressedImage

    from bevfusion_ros.ros.time import make_header

    msg = CompressedImage(header=make_header(stamp_us, frame_id), format="jpeg")
    msg.data = encode_jpeg(rgb, quality)
    return msg


def jpeg_bytes_to_compressed_image(jpeg: bytes, frame_id: str, stamp_us: int = 0):
    """An rclpy CompressedImage carrying already-encoded JPEG bytes as they are."""
    from sensor_msgs.msg import CompressedImage

    from bevfusion_ros.ros.time import make_header

    msg = CompressedImage(header=make_header(stamp_us, frame_id), format="jpeg")
    msg.data = bytes(jpeg)
    return msg


def rgb_to_image(rgb: np.ndarray, frame_id: str, stamp_us: int = 0, encoding: str = "rgb8"):
    """An rclpy raw Image (rgb8 or bgr8) of an RGB image."""
    from sensor_msgs.msg import Image

    from bevfusion_ros.ros.time import make_header

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageDecodeError(f"expected H x W x 3 uint8, got shape {rgb.shape}")
    if encoding == "bgr8":
        rgb = np.ascontiguousarray(rgb[:, :, ::-1])
    elif encoding != "rgb8":
        raise ImageDecodeError(f"rgb_to_image writes rgb8 or bgr8, not {encoding!r}")
    height, width = rgb.shape[:2]
    msg = Image(header=make_header(stamp_us, frame_id), height=height, width=width, encoding=encoding,
                is_bigendian=0, step=width * 3)
    msg.data = rgb.tobytes()
    return msg
