"""Class lists shared by the dataset, the model, evaluation and the nodes (one source of truth)."""
from __future__ import annotations

# The 10 nuScenes detection classes, in the devkit's order (nuscenes/eval/detection/config).
DETECTION_CLASSES: tuple[str, ...] = (
    "car", "truck", "bus", "trailer", "construction_vehicle",
    "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier",
)

# BEVFusion's 6 BEV map-segmentation classes (NuScenesMap layers; divider = road_divider + lane_divider).
MAP_CLASSES: tuple[str, ...] = (
    "drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "divider",
)

# The devkit's 8 attribute names; a box carries at most one ('' for none).
ATTRIBUTES: tuple[str, ...] = (
    "cycle.with_rider", "cycle.without_rider",
    "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down",
    "vehicle.moving", "vehicle.parked", "vehicle.stopped",
)

# The six nuScenes cameras in the order the model stacks them.
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT",
)
LIDAR_NAME = "LIDAR_TOP"

# nuScenes category name -> detection class (the devkit's category_to_detection_name mapping).
CATEGORY_TO_DETECTION: dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}

# Attributes each detection class may carry (the devkit's DetectionBox accepts any, but these are the
# ones nuScenes uses, and the default a decoder falls back to when the attribute head is unsure).
CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "car": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "truck": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "bus": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "trailer": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "construction_vehicle": ("vehicle.moving", "vehicle.parked", "vehicle.stopped"),
    "pedestrian": ("pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down"),
    "motorcycle": ("cycle.with_rider", "cycle.without_rider"),
    "bicycle": ("cycle.with_rider", "cycle.without_rider"),
    "traffic_cone": (),
    "barrier": (),
}
