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


def _rows(detections: Detections) -> list[tuple]:
    """Per detection, plain Python values (numpy scalars make message construction several times slower):
    (box [9] floats, qz, qw, score, label index, label name, attribute name)."""
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, geo.BOX_DIM)
    half = boxes[:, 6] / 2.0
    labels = np.asarray(detections.labels).astype(np.int64).tolist()
    attributes = np.asarray(detections.attributes).astype(np.int64).tolist() if len(detections.attributes) \
        else [-1] * len(labels)
    return [(box, qz, qw, score, label, DETECTION_CLASSES[label], ATTRIBUTES[attr] if 0 <= attr < len(ATTRIBUTES)
             else "")
            for box, qz, qw, score, label, attr in zip(boxes.tolist(), np.sin(half).tolist(), np.cos(half).tolist(),
                                                       np.asarray(detections.scores, np.float64).tolist(), labels,
                                                       attributes)]


def _pose(box: list, qz: float, qw: float) -> Pose:
    pose = Pose()
    position, orientation = pose.position, pose.orientation
    position.x, position.y, position.z = box[0], box[1], box[2]
    orientation.z, orientation.w = qz, qw
    return pose


def _vector(x: float, y: float, z: float) -> Vector3:
    v = Vector3()
    v.x, v.y, v.z = x, y, z
    return v


def detected_objects_msg(detections: Detections, header: Header):
    """``bevfusion_msgs/DetectedObjects3D``."""
    from bevfusion_msgs.msg import DetectedObject3D, DetectedObjects3D

    msg = DetectedObjects3D(header=header)
    objects = []
    for box, qz, qw, score, label, name, attribute in _rows(detections):
        obj = DetectedObject3D()
        obj.label, obj.label_id, obj.score, obj.attribute = name, label, score, attribute
        obj.pose = _pose(box, qz, qw)
        obj.size = _vector(box[3], box[4], box[5])
        obj.velocity = _vector(box[7], box[8], 0.0)
        objects.append(obj)
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
    for box, qz, qw, score, _label, name, _attribute in _rows(detections):
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis = ObjectHypothesis(class_id=name, score=score)
        hypothesis.pose.pose = _pose(box, qz, qw)
        bbox = BoundingBox3D()
        bbox.center = _pose(box, qz, qw)
        bbox.size = _vector(box[3], box[4], box[5])
        detection = Detection3D(header=header)
        detection.results = [hypothesis]
        detection.bbox = bbox
        out.append(detection)
    msg.detections = out
    return msg


def _point(x: float, y: float, z: float) -> Point:
    p = Point()
    p.x, p.y, p.z = x, y, z
    return p


def markers_msg(detections: Detections, header: Header, min_score: float = 0.0, namespace: str = "bevfusion",
                min_speed: float = 0.2) -> MarkerArray:
    """A DELETEALL marker first (RViz then shows exactly this frame's objects), one LINE_LIST with every box
    outline (vertex colours by class: one Marker instead of one per box, as Marker construction dominates the
    cost), then per box a TEXT_VIEW_FACING label and, when moving, an ARROW for its velocity."""
    markers = [Marker(header=header, ns=namespace, id=0, action=Marker.DELETEALL)]
    keep = np.flatnonzero(np.asarray(detections.scores) >= min_score)
    if len(keep) == 0:
        return MarkerArray(markers=markers)
    subset = Detections(np.asarray(detections.boxes)[keep], np.asarray(detections.scores)[keep],
                        np.asarray(detections.labels)[keep],
                        np.asarray(detections.attributes)[keep] if len(detections.attributes) else np.full(len(keep), -1))
    corners = geo.box_corners(subset.boxes)[:, [j for edge in BOX_EDGES for j in edge]].tolist()   # K, 24, 3
    colors = {}
    outlines = Marker(header=header, ns=f"{namespace}/boxes", id=0, type=Marker.LINE_LIST, action=Marker.ADD)
    outlines.pose.orientation.w = 1.0
    outlines.scale.x = 0.08
    outlines.color.a = 1.0
    points, vertex_colors, labels, arrows = [], [], [], []
    for index, (box, _qz, _qw, score, _label, name, _attribute), box_corners in zip(keep.tolist(), _rows(subset),
                                                                                  corners):
        color = colors.get(name)
        if color is None:
            r, g, b = CLASS_COLORS.get(name, (1.0, 1.0, 1.0))
            color = colors[name] = ColorRGBA(r=r, g=g, b=b, a=1.0)
        points += [_point(*c) for c in box_corners]
        vertex_colors += [color] * len(box_corners)
        text = Marker(header=header, ns=f"{namespace}/labels", id=index, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, color=color, text=f"{name} {score:.2f}")
        text.pose.position = _point(box[0], box[1], box[2] + box[5] / 2 + 0.5)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.6
        labels.append(text)
        if (box[7] ** 2 + box[8] ** 2) ** 0.5 >= min_speed:
            arrow = Marker(header=header, ns=f"{namespace}/velocity", id=index, type=Marker.ARROW,
                           action=Marker.ADD, color=color)
            arrow.pose.orientation.w = 1.0
            arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.15, 0.3, 0.3
            arrow.points = [_point(box[0], box[1], box[2]), _point(box[0] + box[7], box[1] + box[8], box[2])]
            arrows.append(arrow)
    outlines.points = points
    outlines.colors = vertex_colors
    return MarkerArray(markers=markers + [outlines] + labels + arrows)


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
