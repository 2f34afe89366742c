"""CompressedImage/Image -> RGB: the real nuScenes JPEG decodes through rclpy messages; raw encodings and
row padding are honoured; corrupt and unsupported data raise ImageDecodeError."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from bevfusion_ros.ros.image import (ImageDecodeError, compressed_image_to_rgb, image_msg_to_rgb, image_to_rgb,
                                     jpeg_bytes_to_compressed_image, rgb_to_image)
from tests.ros.helpers import publish_until_received


def _front_jpeg(sample_dir) -> bytes:
    return next(sample_dir.glob("*__CAM_FRONT__*.jpg")).read_bytes()


def test_real_nuscenes_jpeg_decodes_to_rgb_after_rclpy_transport(node, nuscenes_sample):
    from sensor_msgs.msg import CompressedImage

    jpeg = _front_jpeg(nuscenes_sample)
    msg = jpeg_bytes_to_compressed_image(jpeg, "CAM_FRONT", stamp_us=1_532_402_927_612_460)
    got = publish_until_received(node, msg, CompressedImage)
    rgb = compressed_image_to_rgb(got)
    assert rgb.shape == (900, 1600, 3) and rgb.dtype == np.uint8
    reference = cv2.cvtColor(cv2.imread(str(next(nuscenes_sample.glob("*__CAM_FRONT__*.jpg")))), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, reference)


def test_corrupt_jpeg_raises_a_clear_error(nuscenes_sample):
    jpeg = bytearray(_front_jpeg(nuscenes_sample)[:200])
    msg = jpeg_bytes_to_compressed_image(bytes(jpeg[:2]) + b"garbage" * 20, "CAM_FRONT")
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        compressed_image_to_rgb(msg)
    msg.data = b""
    with pytest.raises(ImageDecodeError, match="no data"):
        compressed_image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_raw_color_images_round_trip(node, encoding):
    from sensor_msgs.msg import Image

    rgb = np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    got = publish_until_received(node, rgb_to_image(rgb, "CAM_BACK", encoding=encoding), Image)
    np.testing.assert_array_equal(image_msg_to_rgb(got), rgb)


def test_mono16_with_row_padding_and_big_endian():
    from sensor_msgs.msg import Image

    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 4096
    rows = values.astype(">u2").view(np.uint8).reshape(3, 8)
    data = np.concatenate([rows, np.zeros((3, 4), np.uint8)], axis=1).tobytes()
    msg = Image(height=3, width=4, encoding="mono16", is_bigendian=1, step=12)
    msg.data = data
    rgb = image_to_rgb(msg)
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb[:, :, 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_unsupported_encoding_and_truncated_raw_image_raise():
    from sensor_msgs.msg import Image

    msg = Image(height=2, width=2, encoding="yuv422", step=4)
    msg.data = bytes(8)
    with pytest.raises(ImageDecodeError, match="unsupported Image encoding"):
        image_to_rgb(msg)
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.data = bytes(10)
    with pytest.raises(ImageDecodeError, match="truncated"):
        image_to_rgb(msg)
