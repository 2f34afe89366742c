"""PerceptionResult -> the node's output messages (ARCHITECTURE.md §3).

- ``bevfusion_msgs/DetectedObjects3D``: label, score, pose (yaw quaternion), size (l, w, h), velocity,
  attribute: everything NDS needs.
- ``vision_msgs/Detection3DArray`` for standard consumers.
- ``visualization_msgs/MarkerArray``: DELETEALL first, then per box a LINE_LIST outline, a text label and,
  when moving, a velocity arrow.
- ``nav_msgs/OccupancyGrid`` per map class, probability x 100 (rows along y, columns along x).
- ``diagnostic_msgs/DiagnosticArray`` from :class:`bevfusion_ros.perception.diagnostics.StatusEntry`.

All outputs carry the LiDAR sweep's header (stamp and frame). Box conventions come from geometry.py.
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from nav_msgs.msg import MapMetaData, OccupancyGrid
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import ATTRIBUTES, DETECTION_CLASSES, MAP_CLASSES
from bevfusion_ros.frame import BEVMap, Detections

# One RGB colour per detection class (markers).
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (1.0, 0.6, 0.0), "truck": (1.0, 0.3, 0.0), "bus": (0.9, 0.0, 0.3), "trailer": (0.6, 0.3, 0.1),
    "construction_vehicle": (0.9, 0.9, 0.0), "pedestrian": (0.0, 0.4, 1.0), "motorcycle": (0.7, 0.0, 1.0),
    "bicycle": (0.9, 0.0, 0.9), "traffic_cone": (0.0, 0.9, 0.4), "barrier": (0.6, 0.6, 0.6),
}
# Corner pairs (indices into geometry.box_corners) of a box's 12 edges.
BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def _pose(box: np.ndarray) -> Pose:
    w, x, y, z = geo.yaw_to_quat_wxyz(float(box[6]))
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = float(box[0]), float(box[1]), float(box[2])
    pose.orientation = Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))
    return pose


def _label(labels: np.ndarray, i: int) -> str:
    return DETECTION_CLASSES[int(labels[i])]


def _attribute(attributes: np.ndarray, i: int) -> str:
    index = int(attributes[i])
    return ATTRIBUTES[index] if 0 <= index < len(ATTRIBUTES) else ""


def detected_objects_msg(detections: Detections, header: Header):
    """``bevfusion_msgs/DetectedObjects3D``."""
    from bevfusion_msgs.msg import DetectedObject3D, DetectedObjects3D

    msg = DetectedObjects3D(header=header)
    objects = []
    for i in range(len(detections)):
        box = detections.boxes[i]
        objects.append(DetectedObject3D(
            label=_label(detections.labels, i), label_id=int(detections.labels[i]),
            score=float(detections.scores[i]), pose=_pose(box),
            size=Vector3(x=float(box[3]), y=float(box[4]), z=float(box[5])),
            velocity=Vector3(x=float(box[7]), y=float(box[8]), z=0.0),
            attribute=_attribute(detections.attributes, i)))
    msg.objects = objects
    return msg


def detections_from_objects_msg(msg) -> Detections:
    """Inverse of :func:`detected_objects_msg` (the replay recorder reads the node's output with it)."""
    n = len(msg.objects)
    boxes = np.zeros((n, geo.BOX_DIM), np.float64)
    scores = np.zeros(n, np.float32)
    labels = np.zeros(n, np.int64)
    attributes = np.full(n, -1, np.int64)
    for i, obj in enumerate(msg.objects):
        q = obj.pose.orientation
        yaw = geo.quat_wxyz_to_yaw(np.array([q.w, q.x, q.y, q.z]))
        p = obj.pose.position
        boxes[i] = [p.x, p.y, p.z, obj.size.x, obj.size.y, obj.size.z, yaw, obj.velocity.x, obj.velocity.y]
        scores[i] = obj.score
        labels[i] = DETECTION_CLASSES.index(obj.label) if obj.label in DETECTION_CLASSES else int(obj.label_id)
        attributes[i] = ATTRIBUTES.index(obj.attribute) if obj.attribute in ATTRIBUTES else -1
    return Detections(boxes=boxes, scores=scores, labels=labels, attributes=attributes)


def detection3d_array_msg(detections: Detections, header: Header):
    """``vision_msgs/Detection3DArray`` (class_id = class name, score, bbox centre/size, pose in results)."""
    from vision_msgs.msg import (BoundingBox3D, Detection3D, Detection3DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose)

    msg = Detection3DArray(header=header)
    out = []
    for i in range(len(detections)):
        box = detections.boxes[i]
        pose = _pose(box)
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=_label(detections.labels, i), score=float(detections.scores[i])))
        hypothesis.pose.pose = pose
        out.append(Detection3D(header=header, results=[hypothesis], bbox=BoundingBox3D(
            center=pose, size=Vector3(x=float(box[3]), y=float(box[4]), z=float(box[5])))))
    msg.detections = out
    return msg


def markers_msg(detections: Detections, header: Header, min_score: float = 0.0, namespace: str = "bevfusion",
                min_speed: float = 0.2) -> MarkerArray:
    """Boxes (LINE_LIST), labels (TEXT_VIEW_FACING) and velocity arrows; a DELETEALL marker first, so
    RViz shows exactly this frame's objects."""
    markers = [Marker(header=header, ns=namespace, id=0, action=Marker.DELETEALL)]
    keep = np.flatnonzero(detections.scores >= min_score)
    corners = geo.box_corners(detections.boxes[keep]) if len(keep) else np.zeros((0, 8, 3))
    lifetime = Duration(sec=0, nanosec=0)
    for k, i in enumerate(keep):
        label = _label(detections.labels, i)
        r, g, b = CLASS_COLORS.get(label, (1.0, 1.0, 1.0))
        color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        box = detections.boxes[i]
        outline = Marker(header=header, ns=f"{namespace}/boxes", id=int(i), type=Marker.LINE_LIST,
                         action=Marker.ADD, color=color, lifetime=lifetime)
        outline.pose.orientation.w = 1.0
        outline.scale.x = 0.08
        c = corners[k]
        outline.points = [Point(x=float(c[j, 0]), y=float(c[j, 1]), z=float(c[j, 2]))
                          for edge in BOX_EDGES for j in edge]
        text = Marker(header=header, ns=f"{namespace}/labels", id=int(i), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, color=color, lifetime=lifetime,
                      text=f"{label} {float(detections.scores[i]):.2f}")
        text.pose.position.x, text.pose.position.y = float(box[0]), float(box[1])
        text.pose.position.z = float(box[2] + box[5] / 2 + 0.5)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.6
        markers += [outline, text]
        speed = float(np.hypot(box[7], box[8]))
        if speed >= min_speed:
            arrow = Marker(header=header, ns=f"{namespace}/velocity", id=int(i), type=Marker.ARROW,
                           action=Marker.ADD, color=color, lifetime=lifetime)
            arrow.pose.orientation.w = 1.0
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.15, 0.3, 0.3
            start = Point(x=float(box[0]), y=float(box[1]), z=float(box[2]))
            end = Point(x=float(box[0] + box[7]), y=float(box[1] + box[8]), z=float(box[2]))
            arrow.points = [start, end]
            markers.append(arrow)
    return MarkerArray(markers=markers)


def occupancy_grids(bev_map: BEVMap, header: Header, classes: tuple[str, ...] = MAP_CLASSES
                    ) -> dict[str, OccupancyGrid]:
    """One grid per map class: cell (row j, column i) = round(100 * probs[c, i, j]) (i along x, j along y),
    origin at (x_min, y_min) in the LiDAR frame."""
    probs = np.asarray(bev_map.probs)
    _, size_x, size_y = probs.shape
    grids = {}
    for c, name in enumerate(classes[: probs.shape[0]]):
        info = MapMetaData(resolution=float(bev_map.resolution), width=int(size_x), height=int(size_y))
        info.origin.position.x, info.origin.position.y = float(bev_map.x_min), float(bev_map.y_min)
        info.origin.orientation.w = 1.0
        cells = np.clip(np.rint(np.nan_to_num(probs[c].T) * 100.0), 0, 100).astype(np.int8)
        grid = OccupancyGrid(header=header, info=info)
        grid.data = array.array("b", cells.tobytes())
        grids[name] = grid
    return grids


def diagnostic_array_msg(entries, stamp, hardware_id: str = "bevfusion_ros") -> DiagnosticArray:
    """``diagnostic_msgs/DiagnosticArray`` from StatusEntry-like objects (name, level, message, values)."""
    status = []
    for entry in entries:
        status.append(DiagnosticStatus(
            level=bytes([int(entry.level)]), name=entry.name, message=entry.message, hardware_id=hardware_id,
            values=[KeyValue(key=str(k), value=str(v)) for k, v in entry.values.items()]))
    return DiagnosticArray(header=Header(stamp=stamp), status=status)
