"""A tiny hand-built nuScenes database for the evaluation tests (fast, no generator needed).

One mini_val scene (``scene-0103``) with three keyframes 0.5 s apart; one annotated object per detection
class, each moving at a constant global velocity, so the devkit's ``box_velocity`` is exact. Ego poses and
the LiDAR extrinsic come from the real nuScenes keyframe's numbers (rotated, tilted, off-origin), so the
LiDAR->global path is not the identity. The GT is also returned in each sample's LiDAR frame, converted
with the devkit's own Box/Quaternion operations (independent of bevfusion_ros.geometry).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bevfusion_ros.classes import ATTRIBUTES, CLASS_ATTRIBUTES, DETECTION_CLASSES

LIDAR2EGO = np.array([[0.0020332718268036842, 0.9997040629386902, 0.024241721257567406, 0.9437130093574524],
                      [-0.9999805092811584, 0.0021756570786237717, -0.00584863917902112, 0.0],
                      [-0.005899650044739246, -0.02422935888171196, 0.9996890425682068, 1.8402299880981445],
                      [0.0, 0.0, 0.0, 1.0]])
EGO2GLOBAL = np.array([[-0.345552921295166, 0.9382579922676086, 0.016282515600323677, 411.3039245605469],
                       [-0.9383381009101868, -0.34528031945228577, -0.01740977168083191, 1180.890380859375],
                       [-0.010712824761867523, -0.021294502541422844, 0.9997158646583557, 0.0],
                       [0.0, 0.0, 0.0, 1.0]])
CATEGORY = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
            "construction_vehicle": "vehicle.construction", "pedestrian": "human.pedestrian.adult",
            "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle",
            "traffic_cone": "movable_object.trafficcone", "barrier": "movable_object.barrier"}
CAMERA_YAWS = {"CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -0.96, "CAM_FRONT_LEFT": 0.96, "CAM_BACK": np.pi,
               "CAM_BACK_LEFT": 1.92, "CAM_BACK_RIGHT": -1.92}
CAM_K = np.array([[320.0, 0.0, 200.0], [0.0, 320.0, 112.0], [0.0, 0.0, 1.0]])
SIZES_WLH = {"car": (1.9, 4.6, 1.7), "truck": (2.5, 7.0, 3.0), "bus": (2.9, 11.0, 3.4), "trailer": (2.6, 10.0, 3.8),
             "construction_vehicle": (2.8, 6.5, 3.2), "pedestrian": (0.7, 0.7, 1.75), "motorcycle": (0.8, 2.1, 1.5),
             "bicycle": (0.6, 1.7, 1.3), "traffic_cone": (0.4, 0.4, 1.0), "barrier": (2.5, 0.5, 1.0)}


def _quat(rot: np.ndarray):
    from pyquaternion import Quaternion
    u, _, vt = np.linalg.svd(rot)  # re-orthonormalize the float32-rounded matrices
    return Quaternion(matrix=u @ vt)


def build_db(root: Path, n_samples: int = 3, seed: int = 0, sensors: bool = False, with_map: bool = False) -> dict:
    """Write a v1.0-mini database under ``root``; returns {"dataroot", "version", "samples": [...]} with,
    per sample, its token, T_ego_lidar, T_global_ego and the GT in the LiDAR frame (boxes [M,9], labels,
    attributes). ``sensors``: also six cameras (small JPEGs) and LiDAR files (ground + points on every
    object); ``with_map``: a map expansion (see :func:`write_map`)."""
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    rng = np.random.default_rng(seed)
    version = "v1.0-mini"
    table_dir = root / version
    table_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                               "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                               "sample_data", "sample_annotation", "map")}
    cat_tok = {}
    for name, cat in CATEGORY.items():
        cat_tok[name] = f"cat-{name}"
        tables["category"].append({"token": cat_tok[name], "name": cat, "description": ""})
    attr_tok = {a: f"attr-{a}" for a in ATTRIBUTES}
    tables["attribute"] = [{"token": t, "name": a, "description": ""} for a, t in attr_tok.items()]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": ""}]
    tables["sensor"] = [{"token": "sensor-lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    cs_q = _quat(LIDAR2EGO[:3, :3])
    tables["calibrated_sensor"] = [{"token": "cs-lidar", "sensor_token": "sensor-lidar",
                                    "translation": LIDAR2EGO[:3, 3].tolist(), "rotation": list(cs_q.elements),
                                    "camera_intrinsic": []}]
    if sensors:
        for cam, yaw in CAMERA_YAWS.items():
            # optical frame (z forward, x right, y down) -> ego, looking along ego yaw
            fwd = np.array([np.cos(yaw), np.sin(yaw), 0.0])
            right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
            R = np.stack([right, [0.0, 0.0, -1.0], fwd], axis=1)
            tables["sensor"].append({"token": f"sensor-{cam}", "channel": cam, "modality": "camera"})
            tables["calibrated_sensor"].append({"token": f"cs-{cam}", "sensor_token": f"sensor-{cam}",
                                                "translation": [1.0, 0.0, 1.6], "rotation": list(_quat(R).elements),
                                                "camera_intrinsic": CAM_K.tolist()})
    tables["log"] = [{"token": "log-0", "logfile": "synthetic", "vehicle": "synthetic", "date_captured": "2026-01-01",
                      "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map-0", "log_tokens": ["log-0"], "category": "semantic_prior", "filename": ""}]

    t0 = 1532402927647951
    dt_us = 500_000
    ego_speed = np.array([3.0, -1.0, 0.0])
    # objects: global position at t0 relative to the ego, velocity (global)
    objects = []
    for i, name in enumerate(DETECTION_CLASSES):
        ang = 2 * np.pi * i / len(DETECTION_CLASSES)
        rel = np.array([12.0 * np.cos(ang), 12.0 * np.sin(ang), 0.5])
        vel = np.zeros(3) if name in ("traffic_cone", "barrier") else np.array([*rng.uniform(-3, 3, 2), 0.0])
        objects.append({"name": name, "rel": rel, "vel": vel, "yaw": float(rng.uniform(-np.pi, np.pi)),
                        "attr": CLASS_ATTRIBUTES[name][i % len(CLASS_ATTRIBUTES[name])]
                        if CLASS_ATTRIBUTES[name] else ""})
        tables["instance"].append({"token": f"inst-{i}", "category_token": cat_tok[name], "nbr_annotations": n_samples,
                                   "first_annotation_token": f"ann-{i}-0",
                                   "last_annotation_token": f"ann-{i}-{n_samples - 1}"})

    sample_tokens = [f"sample-{k}" for k in range(n_samples)]
    tables["scene"] = [{"token": "scene-tok-0", "log_token": "log-0", "nbr_samples": n_samples,
                        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                        "name": "scene-0103", "description": "synthetic"}]
    ego_q = _quat(EGO2GLOBAL[:3, :3])
    out_samples = []
    for k, token in enumerate(sample_tokens):
        ts = t0 + k * dt_us
        ego_t = EGO2GLOBAL[:3, 3] + ego_speed * k * 0.5
        tables["ego_pose"].append({"token": f"pose-{k}", "timestamp": ts, "rotation": list(ego_q.elements),
                                   "translation": ego_t.tolist()})
        tables["sample"].append({"token": token, "timestamp": ts, "scene_token": "scene-tok-0",
                                 "prev": sample_tokens[k - 1] if k > 0 else "",
                                 "next": sample_tokens[k + 1] if k + 1 < n_samples else ""})
        tables["sample_data"].append({"token": f"sd-{k}", "sample_token": token, "ego_pose_token": f"pose-{k}",
                                      "calibrated_sensor_token": "cs-lidar", "timestamp": ts, "fileformat": "pcd",
                                      "is_key_frame": True, "height": 0, "width": 0,
                                      "filename": f"samples/LIDAR_TOP/{k}.pcd.bin",
                                      "prev": f"sd-{k - 1}" if k > 0 else "",
                                      "next": f"sd-{k + 1}" if k + 1 < n_samples else ""})
        boxes, labels, attrs = [], [], []
        if sensors:
            for cam in CAMERA_YAWS:
                fname = f"samples/{cam}/{k}.jpg"
                tables["sample_data"].append({"token": f"sd-{cam}-{k}", "sample_token": token, "ego_pose_token": f"pose-{k}",
                                              "calibrated_sensor_token": f"cs-{cam}", "timestamp": ts, "fileformat": "jpg",
                                              "is_key_frame": True, "height": 225, "width": 400, "filename": fname,
                                              "prev": "", "next": ""})
                (root / "samples" / cam).mkdir(parents=True, exist_ok=True)
                img = np.full((225, 400, 3), 90, np.uint8)
                img[112:] = 60
                import cv2
                cv2.imwrite(str(root / fname), img)
        for i, obj in enumerate(objects):
            pos = EGO2GLOBAL[:3, 3] + obj["rel"] + obj["vel"] * k * 0.5
            rot = Quaternion(axis=[0, 0, 1], angle=obj["yaw"])
            tables["sample_annotation"].append({
                "token": f"ann-{i}-{k}", "sample_token": token, "instance_token": f"inst-{i}",
                "visibility_token": "4", "attribute_tokens": [attr_tok[obj["attr"]]] if obj["attr"] else [],
                "translation": pos.tolist(), "size": list(SIZES_WLH[obj["name"]]), "rotation": list(rot.elements),
                "prev": f"ann-{i}-{k - 1}" if k > 0 else "", "next": f"ann-{i}-{k + 1}" if k + 1 < n_samples else "",
                "num_lidar_pts": 10, "num_radar_pts": 0})
            # global -> ego -> lidar with the devkit's Box (as NuScenes.get_sample_data does)
            box = Box(pos.tolist(), list(SIZES_WLH[obj["name"]]), rot, velocity=tuple(obj["vel"]))
            box.translate(-ego_t)
            box.rotate(ego_q.inverse)
            box.translate(-LIDAR2EGO[:3, 3])
            box.rotate(cs_q.inverse)
            w, l, h = box.wlh
            yaw = box.orientation.yaw_pitch_roll[0]
            boxes.append([*box.center, l, w, h, yaw, *box.velocity[:2]])
            labels.append(DETECTION_CLASSES.index(obj["name"]))
            attrs.append(ATTRIBUTES.index(obj["attr"]) if obj["attr"] else -1)
        if sensors:   # LiDAR: a ground ring + 40 points inside every object box
            g = np.random.default_rng(k)
            r, a = g.uniform(3, 40, 1500), g.uniform(-np.pi, np.pi, 1500)
            ground = np.stack([r * np.cos(a), r * np.sin(a), np.full(1500, -1.8)], 1)
            obj_pts = []
            for b in boxes:
                u = g.uniform(-0.4, 0.4, (40, 3)) * np.array(b[3:6])
                c, s_ = np.cos(b[6]), np.sin(b[6])
                obj_pts.append(np.stack([b[0] + c * u[:, 0] - s_ * u[:, 1], b[1] + s_ * u[:, 0] + c * u[:, 1],
                                         b[2] + u[:, 2]], 1))
            xyz = np.concatenate([ground, *obj_pts])
            pts = np.concatenate([xyz, g.uniform(0, 100, (len(xyz), 1)), np.zeros((len(xyz), 1))], 1)
            (root / "samples" / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)
            pts.astype(np.float32).tofile(root / f"samples/LIDAR_TOP/{k}.pcd.bin")
        T_global_ego = np.eye(4)
        T_global_ego[:3, :3] = ego_q.rotation_matrix
        T_global_ego[:3, 3] = ego_t
        T_ego_lidar = np.eye(4)
        T_ego_lidar[:3, :3] = cs_q.rotation_matrix
        T_ego_lidar[:3, 3] = LIDAR2EGO[:3, 3]
        out_samples.append({"token": token, "T_global_ego": T_global_ego, "T_ego_lidar": T_ego_lidar,
                            "boxes": np.array(boxes), "labels": np.array(labels), "attributes": np.array(attrs)})
    for name, rows in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows))
    if with_map:
        write_map(root, out_samples[0]["T_global_ego"] @ out_samples[0]["T_ego_lidar"])
    return {"dataroot": str(root), "version": version, "samples": out_samples}


def write_map(root: Path, T_global_lidar: np.ndarray) -> None:
    """A map expansion JSON (singapore-onenorth) holding one drivable rectangle (LiDAR x 10..30, y -5..5), a
    ped crossing (x -20..-10, y 10..20) and one road divider along y = 20 (x 0..40), all given in global
    coordinates through ``T_global_lidar``."""
    def to_global(x, y):
        p = T_global_lidar @ np.array([x, y, 0.0, 1.0])
        return float(p[0]), float(p[1])
    nodes, polygons, lines = [], [], []

    def add_polygon(corners):
        toks = []
        for x, y in corners:
            gx, gy = to_global(x, y)
            toks.append(f"n{len(nodes)}")
            nodes.append({"token": toks[-1], "x": gx, "y": gy})
        polygons.append({"token": f"p{len(polygons)}", "exterior_node_tokens": toks, "holes": []})
        return polygons[-1]["token"]

    da = add_polygon([(10, -5), (30, -5), (30, 5), (10, 5)])
    pc = add_polygon([(-20, 10), (-10, 10), (-10, 20), (-20, 20)])
    toks = []
    for x in (0.0, 20.0, 40.0):
        gx, gy = to_global(x, 20.0)
        toks.append(f"n{len(nodes)}")
        nodes.append({"token": toks[-1], "x": gx, "y": gy})
    lines.append({"token": "l0", "node_tokens": toks})
    data = {"version": "1.3", "canvas_edge": [2000.0, 2000.0], "node": nodes, "polygon": polygons, "line": lines,
            "drivable_area": [{"token": "da0", "polygon_tokens": [da]}], "road_segment": [], "road_block": [],
            "lane": [], "ped_crossing": [{"token": "pc0", "polygon_token": pc}], "walkway": [], "stop_line": [],
            "carpark_area": [], "road_divider": [{"token": "rd0", "line_token": "l0", "road_segment_token": ""}],
            "lane_divider": [], "traffic_light": [], "arcline_path_3": {}, "connectivity": {}, "lane_connector": []}
    path = root / "maps" / "expansion"
    path.mkdir(parents=True, exist_ok=True)
    (path / "singapore-onenorth.json").write_text(json.dumps(data))


@pytest.fixture(scope="session")
def tiny_nusc_db(tmp_path_factory):
    return build_db(tmp_path_factory.mktemp("tiny_nusc"))


@pytest.fixture(scope="session")
def sensor_nusc_db(tmp_path_factory):
    """The same database with camera images, LiDAR files and a map expansion (for `bevfusion-ros eval`)."""
    return build_db(tmp_path_factory.mktemp("sensor_nusc"), sensors=True, with_map=True)


@pytest.fixture(scope="session")
def tiny_nusc(tiny_nusc_db):
    from nuscenes import NuScenes
    return NuScenes(version=tiny_nusc_db["version"], dataroot=tiny_nusc_db["dataroot"], verbose=False)
