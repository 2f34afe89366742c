"""PointCloud2 <-> numpy for several field layouts, through rclpy; inconsistent layouts and truncated data
are rejected with PointCloudError; non-finite points are dropped and counted."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros.ros.pointcloud import (PointCloudError, array_to_pointcloud2, fields_dtype, pack_columns,
                                          pointcloud2_to_array, pointcloud2_to_xyzi, xyzi_to_pointcloud2)
from tests.ros.helpers import publish_until_received

RNG = np.random.default_rng(7)


def _points(count: int = 1000) -> np.ndarray:
    return (RNG.standard_normal((count, 4)) * [20, 20, 2, 50]).astype(np.float32)


def _cloud(fields, point_step, data, width, height=1, row_step=None, bigendian=False):
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2(height=height, width=width, point_step=point_step, is_bigendian=bigendian,
                      row_step=point_step * width if row_step is None else row_step)
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.data = bytes(data)
    return msg


def test_xyzi_ring_round_trip_through_rclpy(node):
    from sensor_msgs.msg import PointCloud2

    points = _points()
    ring = RNG.integers(0, 32, len(points))
    msg = xyzi_to_pointcloud2(points, "LIDAR_TOP", stamp_us=1_532_402_927_647_951, ring=ring)
    got = publish_until_received(node, msg, PointCloud2)
    out, dropped = pointcloud2_to_xyzi(got, extra_fields=("ring",))
    assert dropped == 0 and got.header.frame_id == "LIDAR_TOP"
    np.testing.assert_array_equal(out[:, :4], points)
    np.testing.assert_array_equal(out[:, 4], ring)
    assert [f.name for f in got.fields] == ["x", "y", "z", "intensity", "ring"]


def test_reading_is_zero_copy_for_packed_rows():
    msg = xyzi_to_pointcloud2(_points(10), "LIDAR_TOP", stamp_us=0)
    view = pointcloud2_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def test_padded_float64_layout_with_leading_field_reads_correctly():
    """x,y,z float64 after a uint8 tag, 32-byte points (padding at the end), rows padded by 8 bytes."""
    points = _points(12).astype(np.float64)
    dtype = np.dtype({"names": ["tag", "x", "y", "z", "intensity"], "formats": ["u1", "<f8", "<f8", "<f8", "<u2"],
                      "offsets": [0, 4, 12, 20, 28], "itemsize": 32})
    packed = np.zeros(12, dtype)
    for index, name in enumerate(["x", "y", "z"]):
        packed[name] = points[:, index]
    packed["intensity"] = np.arange(12)
    rows = packed.reshape(3, 4).view(np.uint8).reshape(3, 128)
    data = np.concatenate([rows, np.full((3, 8), 0xAB, np.uint8)], axis=1).tobytes()  # row_step 136
    msg = _cloud([("tag", 0, 2, 1), ("x", 4, 8, 1), ("y", 12, 8, 1), ("z", 20, 8, 1), ("intensity", 28, 4, 1)],
                 32, data, width=4, height=3, row_step=136)
    out, dropped = pointcloud2_to_xyzi(msg)
    assert dropped == 0 and out.dtype == np.float32 and out.shape == (12, 4)
    np.testing.assert_allclose(out[:, :3], points[:, :3].astype(np.float32))
    np.testing.assert_array_equal(out[:, 3], np.arange(12))


def test_big_endian_cloud_without_intensity_reads_zero_intensity():
    points = _points(5)
    data = points[:, :3].astype(">f4").tobytes()
    msg = _cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, data, width=5, bigendian=True)
    out, _ = pointcloud2_to_xyzi(msg)
    np.testing.assert_array_equal(out[:, :3], points[:, :3])
    assert not out[:, 3].any()


def test_array_field_and_extra_columns_pack_and_read_back():
    columns = {"x": np.arange(4, dtype=np.float32), "y": np.ones(4, np.float32), "z": np.zeros(4, np.float32),
               "rgb": np.arange(12, dtype=np.uint8).reshape(4, 3), "time": np.linspace(0, 0.05, 4).astype(np.float64)}
    msg = array_to_pointcloud2(columns, "LIDAR_TOP", stamp_us=5)
    cloud = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(cloud["rgb"], columns["rgb"])
    np.testing.assert_array_equal(cloud["time"], columns["time"])
    out, _ = pointcloud2_to_xyzi(msg, extra_fields=("time",))
    np.testing.assert_allclose(out[:, 4], columns["time"].astype(np.float32))
    with pytest.raises(PointCloudError, match="count"):
        pointcloud2_to_xyzi(msg, extra_fields=("rgb",))


def test_non_finite_points_are_dropped_and_counted():
    points = _points(100)
    points[3, 0] = np.nan
    points[10, 2] = np.inf
    points[50, 3] = -np.inf
    out, dropped = pointcloud2_to_xyzi(xyzi_to_pointcloud2(points, "LIDAR_TOP", 0))
    assert dropped == 3 and len(out) == 97
    np.testing.assert_array_equal(out, np.delete(points, [3, 10, 50], axis=0))


@pytest.mark.parametrize("fields, point_step, match", [
    ([("x", 0, 7, 1), ("y", 2, 7, 1), ("z", 8, 7, 1)], 12, "overlap"),
    ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 10, "does not fit"),
    ([("x", 0, 7, 1), ("y", 4, 9, 1), ("z", 8, 7, 1)], 12, "unknown PointField datatype"),
    ([("x", 0, 7, 1), ("x", 4, 7, 1), ("z", 8, 7, 1)], 12, "twice"),
    ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 0, "point_step"),
    ([], 12, "no fields"),
])
def test_inconsistent_layouts_are_rejected(fields, point_step, match):
    msg = _cloud(fields, point_step, bytes(max(point_step, 1) * 2), width=2)
    with pytest.raises(PointCloudError, match=match):
        pointcloud2_to_xyzi(msg)


def test_truncated_data_is_rejected():
    msg = xyzi_to_pointcloud2(_points(10), "LIDAR_TOP", 0)
    msg.data = bytes(msg.data)[:-5]
    with pytest.raises(PointCloudError, match="truncated"):
        pointcloud2_to_xyzi(msg)


def test_row_step_smaller_than_a_row_is_rejected():
    msg = xyzi_to_pointcloud2(_points(10), "LIDAR_TOP", 0)
    msg.row_step = 16 * 9
    with pytest.raises(PointCloudError, match="row_step"):
        pointcloud2_to_array(msg)


def test_missing_xyz_field_is_rejected():
    msg = _cloud([("a", 0, 7, 1)], 4, bytes(8), width=2)
    with pytest.raises(PointCloudError, match="lacks"):
        pointcloud2_to_xyzi(msg)


def test_pack_columns_rejects_mismatched_lengths_and_bad_dtypes():
    with pytest.raises(PointCloudError, match="rows"):
        pack_columns({"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)})
    with pytest.raises(PointCloudError, match="dtype"):
        pack_columns({"x": np.zeros(3, np.complex64)})


def test_point_error_is_a_value_error():
    with pytest.raises(ValueError):
        fields_dtype([], 4)
