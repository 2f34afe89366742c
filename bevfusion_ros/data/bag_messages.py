"""rosbags message builders for the dataset -> rosbag2 conversion (no rclpy needed).

Each function returns ``(type_name, message)`` built from rosbags' typestore dataclasses
(:func:`bevfusion_ros.ros.types.typestore`), ready for ``typestore().serialize_cdr``. Topic names, frames
and layouts are those of ARCHITECTURE.md §3:

- ``/LIDAR_TOP`` PointCloud2: x, y, z, intensity float32 + ring uint16, frame ``LIDAR_TOP``
- ``/CAM_*/image_rect_compressed`` CompressedImage (JPEG bytes as they are), frame ``CAM_*``
- ``/CAM_*/camera_info`` CameraInfo (rectified pinhole: R = I, P = [K | 0], D = 0)
- ``/tf_static`` base_link -> each sensor; ``/tf`` map -> base_link (ego pose)
- ``/gt/detections`` bevfusion_msgs/DetectedObjects3D and ``/gt/markers`` MarkerArray (ground truth boxes)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bevfusion_ros import classes, geometry
from bevfusion_ros.ros.camera_info import intrinsics_fields
from bevfusion_ros.ros.pointcloud import pack_columns, xyzi_columns
from bevfusion_ros.ros.types import typestore

LIDAR_TOPIC = "/LIDAR_TOP"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
GT_DETECTIONS_TOPIC = "/gt/detections"
GT_MARKERS_TOPIC = "/gt/markers"
MAP_FRAME = "map"
BASE_FRAME = "base_link"

# RGBA per detection class for the ground-truth markers
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (1.0, 0.6, 0.0), "truck": (1.0, 0.3, 0.0), "bus": (1.0, 0.0, 0.3), "trailer": (0.8, 0.4, 0.2),
    "construction_vehicle": (0.9, 0.9, 0.0), "pedestrian": (0.0, 0.4, 1.0), "motorcycle": (0.7, 0.0, 1.0),
    "bicycle": (1.0, 0.0, 1.0), "traffic_cone": (0.0, 1.0, 0.3), "barrier": (0.5, 0.5, 0.5),
}
# box_corners() order: bottom 0-3, top 4-7
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def camera_image_topic(camera: str) -> str:
    return f"/{camera}/image_rect_compressed"


def camera_info_topic(camera: str) -> str:
    return f"/{camera}/camera_info"


def _t(name: str):
    return typestore().types[name]


def header(stamp_us: int, frame_id: str):
    sec, nanosec = geometry.us_to_stamp(stamp_us)
    return _t("std_msgs/msg/Header")(stamp=_t("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec),
                                     frame_id=frame_id)


def _vector3(values: Sequence[float]):
    return _t("geometry_msgs/msg/Vector3")(x=float(values[0]), y=float(values[1]), z=float(values[2]))


def _quaternion_xyzw(rotation_wxyz: Sequence[float]):
    w, x, y, z = (float(v) for v in rotation_wxyz)
    return _t("geometry_msgs/msg/Quaternion")(x=x, y=y, z=z, w=w)


def _pose(translation: Sequence[float], rotation_wxyz: Sequence[float]):
    point = _t("geometry_msgs/msg/Point")(x=float(translation[0]), y=float(translation[1]), z=float(translation[2]))
    return _t("geometry_msgs/msg/Pose")(position=point, orientation=_quaternion_xyzw(rotation_wxyz))


# ----------------------------------------------------------------------------- sensors


def pointcloud_message(points: np.ndarray, stamp_us: int, frame_id: str = classes.LIDAR_NAME,
                       with_ring: bool = True) -> tuple[str, Any]:
    """nuScenes points [N, >=4] (x, y, z, intensity[, ring]) -> PointCloud2 (x,y,z,intensity f32 + ring u16)."""
    points = np.asarray(points, dtype=np.float32)
    ring = points[:, 4] if with_ring and points.shape[1] >= 5 else None
    specs, point_step, data = pack_columns(xyzi_columns(points, ring=ring))
    field_type = _t("sensor_msgs/msg/PointField")
    msg = _t("sensor_msgs/msg/PointCloud2")(
        header=header(stamp_us, frame_id), height=1, width=len(points),
        fields=[field_type(name=s.name, offset=s.offset, datatype=s.datatype, count=s.count) for s in specs],
        is_bigendian=False, point_step=point_step, row_step=point_step * len(points),
        data=np.frombuffer(data, dtype=np.uint8), is_dense=True)
    return "sensor_msgs/msg/PointCloud2", msg


def compressed_image_message(jpeg: bytes, stamp_us: int, frame_id: str) -> tuple[str, Any]:
    msg = _t("sensor_msgs/msg/CompressedImage")(header=header(stamp_us, frame_id), format="jpeg",
                                                 data=np.frombuffer(jpeg, dtype=np.uint8))
    return "sensor_msgs/msg/CompressedImage", msg


def camera_info_message(intrinsic: np.ndarray, width: int, height: int, stamp_us: int, frame_id: str
                        ) -> tuple[str, Any]:
    arrays = intrinsics_fields(intrinsic)
    roi = _t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    msg = _t("sensor_msgs/msg/CameraInfo")(
        header=header(stamp_us, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=arrays["d"], k=arrays["k"], r=arrays["r"], p=arrays["p"], binning_x=0, binning_y=0, roi=roi)
    return "sensor_msgs/msg/CameraInfo", msg


def transform_stamped(parent: str, child: str, stamp_us: int, translation: Sequence[float],
                      rotation_wxyz: Sequence[float]):
    transform = _t("geometry_msgs/msg/Transform")(translation=_vector3(translation),
                                                  rotation=_quaternion_xyzw(rotation_wxyz))
    return _t("geometry_msgs/msg/TransformStamped")(header=header(stamp_us, parent), child_frame_id=child,
                                                    transform=transform)


def tf_message(transforms: Sequence[Any]) -> tuple[str, Any]:
    return "tf2_msgs/msg/TFMessage", _t("tf2_msgs/msg/TFMessage")(transforms=list(transforms))


# ----------------------------------------------------------------------------- ground truth


def detected_objects_message(boxes: np.ndarray, labels: Sequence[str], attributes: Sequence[str],
                             stamp_us: int, frame_id: str = classes.LIDAR_NAME, scores: Sequence[float] | None = None
                             ) -> tuple[str, Any]:
    """Internal boxes [M, 9] (x, y, z, l, w, h, yaw, vx, vy) -> bevfusion_msgs/DetectedObjects3D."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, geometry.BOX_DIM)
    obj_type = _t("bevfusion_msgs/msg/DetectedObject3D")
    objects = []
    for index, box in enumerate(boxes):
        label = str(labels[index])
        objects.append(obj_type(
            label=label, label_id=classes.DETECTION_CLASSES.index(label) if label in classes.DETECTION_CLASSES else 255,
            score=float(1.0 if scores is None else scores[index]),
            pose=_pose(box[:3], geometry.yaw_to_quat_wxyz(box[6])), size=_vector3(box[3:6]),
            velocity=_vector3((box[7], box[8], 0.0)), attribute=str(attributes[index])))
    msg = _t("bevfusion_msgs/msg/DetectedObjects3D")(header=header(stamp_us, frame_id), objects=objects)
    return "bevfusion_msgs/msg/DetectedObjects3D", msg


def box_markers_message(boxes: np.ndarray, labels: Sequence[str], stamp_us: int,
                        frame_id: str = classes.LIDAR_NAME, namespace: str = "gt") -> tuple[str, Any]:
    """MarkerArray: a DELETEALL, then one LINE_LIST wireframe per box coloured by class."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, geometry.BOX_DIM)
    marker_type = _t("visualization_msgs/msg/Marker")
    point_type = _t("geometry_msgs/msg/Point")
    color_type = _t("std_msgs/msg/ColorRGBA")
    duration = _t("builtin_interfaces/msg/Duration")
    identity = _pose((0, 0, 0), (1, 0, 0, 0))

    def marker(marker_id: int, action: int, points=(), color=(1.0, 1.0, 1.0)):
        return marker_type(
            header=header(stamp_us, frame_id), ns=namespace, id=marker_id, type=marker_type.LINE_LIST,
            action=action, pose=identity, scale=_vector3((0.05, 0.0, 0.0)),
            color=color_type(r=color[0], g=color[1], b=color[2], a=1.0), lifetime=duration(sec=0, nanosec=0),
            frame_locked=False, points=list(points), colors=[], texture_resource="",
            texture=_t("sensor_msgs/msg/CompressedImage")(header=header(0, ""), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=_t("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)

    markers = [marker(0, marker_type.DELETEALL)]
    corners = geometry.box_corners(boxes) if len(boxes) else np.zeros((0, 8, 3))
    for index, box_corners in enumerate(corners):
        points = [point_type(x=float(box_corners[i][0]), y=float(box_corners[i][1]), z=float(box_corners[i][2]))
                  for edge in BOX_EDGES for i in edge]
        markers.append(marker(index + 1, marker_type.ADD, points, CLASS_COLORS.get(str(labels[index]), (1, 1, 1))))
    return "visualization_msgs/msg/MarkerArray", _t("visualization_msgs/msg/MarkerArray")(markers=markers)
