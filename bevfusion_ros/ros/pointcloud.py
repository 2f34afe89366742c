"""sensor_msgs/PointCloud2 <-> numpy, for any field layout.

Reading builds a numpy structured dtype from the message's PointFields (names, offsets, datatypes, counts,
``point_step``, ``is_bigendian``) and views the data buffer through it: zero-copy when rows are packed
(``row_step == width * point_step``), one copy when rows carry padding. The layout is validated first;
an inconsistent layout or truncated data raises :class:`PointCloudError` naming what was expected.

Writing packs columns into one structured array and assigns its ``bytes`` to ``msg.data`` (assigning a
numpy array to an rclpy ``uint8[]`` field is ~200x slower, see ROS-ENV.md).

The functions read any object shaped like a PointCloud2 (rclpy messages and rosbags' dataclasses alike),
so the bag converter, the player and the nodes share them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

# sensor_msgs/PointField datatype constants -> numpy scalar type (native order; byte order set per message)
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),      # INT8
    2: np.dtype(np.uint8),     # UINT8
    3: np.dtype(np.int16),     # INT16
    4: np.dtype(np.uint16),    # UINT16
    5: np.dtype(np.int32),     # INT32
    6: np.dtype(np.uint32),    # UINT32
    7: np.dtype(np.float32),   # FLOAT32
    8: np.dtype(np.float64),   # FLOAT64
}
NUMPY_TO_POINTFIELD: dict[np.dtype, int] = {dtype: code for code, dtype in POINTFIELD_DTYPES.items()}

XYZI_FIELDS = ("x", "y", "z", "intensity")


class PointCloudError(ValueError):
    """A PointCloud2 whose layout or data is inconsistent (bad fields, steps, sizes or truncated data)."""


@dataclass(frozen=True)
class FieldSpec:
    """One PointField: ``name`` at byte ``offset``, ``count`` elements of PointField ``datatype``."""

    name: str
    offset: int
    datatype: int
    count: int = 1


# ----------------------------------------------------------------------------- layout


def fields_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype (itemsize ``point_step``) of a PointField list; validates the layout.

    Raises :class:`PointCloudError` for an unknown datatype, a field past ``point_step``, overlapping or
    duplicate fields, or a non-positive ``point_step``.
    """
    point_step = int(point_step)
    if point_step <= 0:
        raise PointCloudError(f"point_step must be positive, got {point_step}")
    order = ">" if is_bigendian else "<"
    names, formats, offsets, spans = [], [], [], []
    for field in fields:
        name, offset, datatype, count = str(field.name), int(field.offset), int(field.datatype), int(field.count)
        if datatype not in POINTFIELD_DTYPES:
            raise PointCloudError(f"field {name!r} has unknown PointField datatype {datatype} (expected 1..8)")
        if name in names:
            raise PointCloudError(f"field {name!r} appears twice")
        if not name:
            raise PointCloudError("a PointField has an empty name")
        count = max(count, 1)  # count 0 is written by some drivers and means 1
        base = POINTFIELD_DTYPES[datatype].newbyteorder(order)
        size = base.itemsize * count
        if offset < 0 or offset + size > point_step:
            raise PointCloudError(f"field {name!r} (offset {offset}, {size} bytes) does not fit in "
                                  f"point_step {point_step}")
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(offset)
        spans.append((offset, offset + size, name))
    if not names:
        raise PointCloudError("PointCloud2 has no fields")
    spans.sort()
    for (_s0, end0, name0), (start1, _e1, name1) in zip(spans, spans[1:]):
        if start1 < end0:
            raise PointCloudError(f"fields {name0!r} and {name1!r} overlap")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def _data_buffer(data: Any) -> np.ndarray:
    """uint8 view of a message's ``data`` (rclpy array.array, bytes, memoryview or numpy) without copying."""
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def pointcloud2_to_array(msg: Any) -> np.ndarray:
    """All points of a PointCloud2 as a 1-D structured array (row-major over height x width).

    Zero-copy (a view on ``msg.data``) when rows are packed; dense clouds and organized clouds alike.
    """
    dtype = fields_dtype(msg.fields, msg.point_step, bool(msg.is_bigendian))
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height < 0 or width < 0:
        raise PointCloudError(f"negative size {height}x{width}")
    if row_step < width * point_step:
        raise PointCloudError(f"row_step {row_step} is smaller than width * point_step = "
                              f"{width} * {point_step} = {width * point_step}")
    buffer = _data_buffer(msg.data)
    expected = row_step * height
    if buffer.size < expected:
        raise PointCloudError(f"PointCloud2 data is truncated: {buffer.size} bytes, expected row_step * height "
                              f"= {row_step} * {height} = {expected}")
    if buffer.size > expected:
        raise PointCloudError(f"PointCloud2 data has {buffer.size} bytes, expected row_step * height = "
                              f"{row_step} * {height} = {expected}")
    if height * width == 0:
        return np.zeros(0, dtype=dtype)
    if row_step == width * point_step:
        return buffer.view(dtype)
    rows = buffer.reshape(height, row_step)[:, : width * point_step]
    return np.ascontiguousarray(rows).reshape(-1).view(dtype)


def field_names(msg: Any) -> list[str]:
    return [str(field.name) for field in msg.fields]


def pointcloud2_to_xyzi(msg: Any, extra_fields: Sequence[str] = (), intensity_field: str = "intensity"
                        ) -> tuple[np.ndarray, int]:
    """``(points float32 [N, 4 + len(extra_fields)], dropped)`` from a PointCloud2.

    Columns: x, y, z, intensity, then ``extra_fields`` in order (e.g. ``("ring", "time")``), all cast to
    float32. A cloud without an intensity field gets intensity 0. Points with any non-finite value in
    these columns are dropped; ``dropped`` counts them.
    Raises :class:`PointCloudError` for a bad layout, truncated data, or missing x/y/z/extra fields.
    """
    cloud = pointcloud2_to_array(msg)
    names = cloud.dtype.names or ()
    missing = [name for name in ("x", "y", "z", *extra_fields) if name not in names]
    if missing:
        raise PointCloudError(f"PointCloud2 lacks field(s) {missing}; it has {list(names)}")
    out = np.empty((cloud.shape[0], 4 + len(extra_fields)), dtype=np.float32)
    for column, name in enumerate(("x", "y", "z")):
        out[:, column] = _scalar_column(cloud, name)
    if intensity_field in names:
        out[:, 3] = _scalar_column(cloud, intensity_field)
    else:
        out[:, 3] = 0.0
    for column, name in enumerate(extra_fields, start=4):
        out[:, column] = _scalar_column(cloud, name)
    finite = np.isfinite(out).all(axis=1)
    dropped = int(finite.size - np.count_nonzero(finite))
    if dropped:
        out = out[finite]
    return out, dropped


def _scalar_column(cloud: np.ndarray, name: str) -> np.ndarray:
    column = cloud[name]
    if column.ndim != 1:
        raise PointCloudError(f"field {name!r} has count {column.shape[1:]}, expected a scalar field")
    return column


# ----------------------------------------------------------------------------- writing


def pack_columns(columns: Mapping[str, np.ndarray]) -> tuple[list[FieldSpec], int, bytes]:
    """Pack named columns (each [N] or [N, count]) into PointCloud2 bytes, fields in the given order.

    Returns ``(fields, point_step, data)``; each column keeps its numpy dtype (must be one of the eight
    PointField types), little-endian, packed without padding.
    """
    if not columns:
        raise PointCloudError("no columns to pack")
    length = None
    specs, formats, names, offsets = [], [], [], []
    offset = 0
    for name, values in columns.items():
        values = np.asarray(values)
        code = NUMPY_TO_POINTFIELD.get(values.dtype.newbyteorder("="))
        if code is None:
            raise PointCloudError(f"column {name!r} has dtype {values.dtype}, not a PointField type")
        count = 1 if values.ndim == 1 else int(np.prod(values.shape[1:]))
        if length is None:
            length = values.shape[0]
        elif values.shape[0] != length:
            raise PointCloudError(f"column {name!r} has {values.shape[0]} rows, expected {length}")
        le = values.dtype.newbyteorder("<")
        specs.append(FieldSpec(name, offset, code, count))
        names.append(name)
        formats.append(le if count == 1 else np.dtype((le, (count,))))
        offsets.append(offset)
        offset += le.itemsize * count
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": offset})
    packed = np.empty(length, dtype=dtype)
    for name, values in columns.items():
        packed[name] = np.asarray(values).reshape(packed[name].shape)
    return specs, offset, packed.tobytes()


def xyzi_columns(points: np.ndarray, ring: np.ndarray | None = None, time: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """Columns of the project's LiDAR layout: x, y, z, intensity float32 [+ ring uint16] [+ time float32]."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 4:
        raise PointCloudError(f"points must be [N, >=4] (x, y, z, intensity), got shape {points.shape}")
    columns = {name: points[:, index].astype(np.float32) for index, name in enumerate(XYZI_FIELDS)}
    if ring is not None:
        columns["ring"] = np.asarray(ring).astype(np.uint16)
    if time is not None:
        columns["time"] = np.asarray(time).astype(np.float32)
    return columns


def array_to_pointcloud2(columns: Mapping[str, np.ndarray], frame_id: str, stamp_us: int | None = None,
                         header: Any = None):
    """An rclpy ``sensor_msgs/PointCloud2`` (height 1, dense) from named columns.

    Give either ``header`` (an rclpy Header) or ``stamp_us``.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    from bevfusion_ros.ros.time import make_header

    specs, point_step, data = pack_columns(columns)
    count = len(data) // point_step
    msg = PointCloud2()
    msg.header = header if header is not None else make_header(int(stamp_us or 0), frame_id)
    if header is not None:
        msg.header.frame_id = frame_id
    msg.height = 1
    msg.width = count
    msg.fields = [PointField(name=spec.name, offset=spec.offset, datatype=spec.datatype, count=spec.count)
                  for spec in specs]
    msg.is_bigendian = False
    msg.point_step = point_step
    msg.row_step = point_step * count
    msg.data = data
    msg.is_dense = True
    return msg


def xyzi_to_pointcloud2(points: np.ndarray, frame_id: str, stamp_us: int | None = None,
                        ring: np.ndarray | None = None, time: np.ndarray | None = None, header: Any = None):
    """An rclpy PointCloud2 with fields x, y, z, intensity (float32) [+ ring uint16] [+ time float32]."""
    return array_to_pointcloud2(xyzi_columns(points, ring, time), frame_id, stamp_us=stamp_us, header=header)
