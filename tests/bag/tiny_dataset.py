"""A tiny nuScenes-format dataset for the bag tests, written in a second, built from the real keyframe.

One scene (``scene-0061``, v1.0-mini) with ``n_keyframes`` keyframes 0.5 s apart and one LiDAR sweep between
consecutive keyframes; six cameras at the keyframes only. Rig (lidar2ego, cam2ego, intrinsics), ego pose,
points, JPEGs and boxes come from ``../shared/data/nuscenes-sample`` when present; without it, random
points and noise JPEGs on the same layout keep the tests meaningful for the plumbing.

Returns the ground truth the converter must reproduce: per sample_data token its channel, timestamp and
file; per keyframe the boxes in the LiDAR frame.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros import geometry
from bevfusion_ros.classes import CAMERA_NAMES, DETECTION_CLASSES

CATEGORY = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
            "construction_vehicle": "vehicle.construction", "pedestrian": "human.pedestrian.adult",
            "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle",
            "traffic_cone": "movable_object.trafficcone", "barrier": "movable_object.barrier"}
T0_US = 1_532_402_927_647_951
KEYFRAME_DT_US = 500_000


def _rig(sample_dir: Path | None) -> dict:
    if sample_dir is not None and (sample_dir / "sample.json").is_file():
        meta = json.loads((sample_dir / "sample.json").read_text())
        points = np.fromfile(sample_dir / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
        cameras = {name: {"K": np.asarray(cam["cam2img"]), "cam2ego": np.asarray(cam["cam2ego"]),
                          "jpeg": (sample_dir / cam["file"]).read_bytes()} for name, cam in meta["cameras"].items()}
        boxes = [(inst["label"], np.asarray(inst["box"]), np.asarray(inst["velocity"])) for inst in meta["instances"]
                 if inst["label"] in DETECTION_CLASSES]
        return {"lidar2ego": np.asarray(meta["lidar"]["lidar2ego"]), "ego2global": np.asarray(meta["ego2global"]),
                "points": points, "cameras": cameras, "boxes": boxes}
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-40, 40, (3000, 3)), rng.uniform(0, 100, (3000, 1)),
                             rng.integers(0, 32, (3000, 1))], axis=1).astype(np.float32)
    cameras = {}
    for index, name in enumerate(CAMERA_NAMES):
        yaw = index * np.pi / 3
        optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # camera axes in a forward frame
        cam2ego = geometry.make_transform(geometry.quat_wxyz_to_matrix(geometry.yaw_to_quat_wxyz(yaw)) @ optical,
                                          [1.5, 0.0, 1.5])
        noise = rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8)
        cameras[name] = {"K": np.array([[1260.0, 0, 800], [0, 1260.0, 450], [0, 0, 1]]), "cam2ego": cam2ego,
                         "jpeg": cv2.imencode(".jpg", noise)[1].tobytes()}
    boxes = [("car", np.array([10.0, 2.0, -1.0, 4.6, 1.9, 1.7, 0.3]), np.array([1.0, 0.0])),
             ("pedestrian", np.array([6.0, -3.0, -0.9, 0.7, 0.7, 1.8, 1.0]), np.array([0.0, 0.5]))]
    return {"lidar2ego": geometry.make_transform(np.eye(3), [0.9, 0.0, 1.8]),
            "ego2global": geometry.make_transform(geometry.yaw_to_quat_wxyz(0.4), [400.0, 1100.0, 0.0]),
            "points": points, "cameras": cameras, "boxes": boxes}


def _pose_record(T: np.ndarray) -> tuple[list[float], list[float]]:
    u, _, vt = np.linalg.svd(T[:3, :3])  # re-orthonormalize float32-rounded matrices
    return T[:3, 3].tolist(), geometry.matrix_to_quat_wxyz(u @ vt).tolist()


def build_tiny_dataset(root: Path, sample_dir: Path | None, n_keyframes: int = 2) -> dict:
    rig = _rig(sample_dir)
    version = "v1.0-mini"
    tables: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                               "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                               "sample_data", "sample_annotation", "map")}
    tables["category"] = [{"token": f"cat-{n}", "name": c, "description": ""} for n, c in CATEGORY.items()]
    tables["attribute"] = [{"token": "attr-moving", "name": "vehicle.moving", "description": ""}]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": ""}]
    tables["log"] = [{"token": "log-0", "logfile": "tiny", "vehicle": "tiny", "date_captured": "2018-07-24",
                      "location": "singapore-onenorth"}]
    tables["map"] = [{"token": "map-0", "log_tokens": ["log-0"], "category": "semantic_prior", "filename": ""}]
    channels = ["LIDAR_TOP", *CAMERA_NAMES]
    for channel in channels:
        tables["sensor"].append({"token": f"sensor-{channel}", "channel": channel,
                                 "modality": "lidar" if channel == "LIDAR_TOP" else "camera"})
        T = rig["lidar2ego"] if channel == "LIDAR_TOP" else rig["cameras"][channel]["cam2ego"]
        translation, rotation = _pose_record(T)
        tables["calibrated_sensor"].append({
            "token": f"cs-{channel}", "sensor_token": f"sensor-{channel}", "translation": translation,
            "rotation": rotation,
            "camera_intrinsic": [] if channel == "LIDAR_TOP" else rig["cameras"][channel]["K"].tolist()})

    sample_tokens = [f"sample-{k}" for k in range(n_keyframes)]
    tables["scene"] = [{"token": "scene-tok", "log_token": "log-0", "nbr_samples": n_keyframes,
                        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                        "name": "scene-0061", "description": "tiny"}]
    for k, token in enumerate(sample_tokens):
        tables["sample"].append({"token": token, "timestamp": T0_US + k * KEYFRAME_DT_US, "scene_token": "scene-tok",
                                 "prev": sample_tokens[k - 1] if k else "",
                                 "next": sample_tokens[k + 1] if k + 1 < n_keyframes else ""})

    truth = {"records": {}, "keyframes": [], "dataroot": str(root), "version": version, "scene": "scene-0061"}

    def ego_at(stamp: int) -> np.ndarray:
        shift = (stamp - T0_US) * 1e-6 * np.array([2.0, 0.5, 0.0])  # ego drives at ~2 m/s
        T = rig["ego2global"].copy()
        T[:3, 3] += shift
        return T

    # sample_data: LiDAR keyframes + one sweep in between; cameras at the keyframes (+ a small offset)
    records = []
    for k, token in enumerate(sample_tokens):
        stamp = T0_US + k * KEYFRAME_DT_US
        records.append(("LIDAR_TOP", token, stamp, True))
        if k + 1 < n_keyframes:
            records.append(("LIDAR_TOP", token, stamp + KEYFRAME_DT_US // 2, False))
        for index, camera in enumerate(CAMERA_NAMES):
            records.append((camera, token, stamp - 40_000 + 5_000 * index, True))
    by_channel: dict[str, list] = {}
    for channel, token, stamp, key in records:
        by_channel.setdefault(channel, []).append((stamp, token, key))
    for channel, rows in by_channel.items():
        rows.sort()
        for index, (stamp, sample_token, key) in enumerate(rows):
            sd_token = f"sd-{channel}-{index}"
            folder = "samples" if key else "sweeps"
            ext = "pcd.bin" if channel == "LIDAR_TOP" else "jpg"
            filename = f"{folder}/{channel}/tiny__{channel}__{stamp}.{ext}"
            (root / filename).parent.mkdir(parents=True, exist_ok=True)
            if channel == "LIDAR_TOP":
                points = rig["points"].copy()
                points[:, 0] += 0.01 * index  # each sweep differs
                points.tofile(root / filename)
                payload = points
            else:
                (root / filename).write_bytes(rig["cameras"][channel]["jpeg"])
                payload = rig["cameras"][channel]["jpeg"]
            translation, rotation = _pose_record(ego_at(stamp))
            tables["ego_pose"].append({"token": f"pose-{sd_token}", "timestamp": stamp, "translation": translation,
                                       "rotation": rotation})
            tables["sample_data"].append({
                "token": sd_token, "sample_token": sample_token, "ego_pose_token": f"pose-{sd_token}",
                "calibrated_sensor_token": f"cs-{channel}", "timestamp": stamp,
                "fileformat": "pcd" if channel == "LIDAR_TOP" else "jpg", "is_key_frame": key,
                "height": 0 if channel == "LIDAR_TOP" else 900, "width": 0 if channel == "LIDAR_TOP" else 1600,
                "filename": filename, "prev": f"sd-{channel}-{index - 1}" if index else "",
                "next": f"sd-{channel}-{index + 1}" if index + 1 < len(rows) else ""})
            truth["records"][sd_token] = {"channel": channel, "stamp": stamp, "key": key, "payload": payload}

    # annotations: the sample's boxes (LiDAR frame of keyframe 0) placed in the global frame, static objects
    T_global_lidar0 = ego_at(T0_US) @ rig["lidar2ego"]
    lidar0_boxes = np.array([[*box, *vel] for _label, box, vel in rig["boxes"]])
    global_boxes = geometry.transform_boxes(T_global_lidar0, lidar0_boxes)
    labels = [label for label, _box, _vel in rig["boxes"]]
    for i, label in enumerate(labels):
        tables["instance"].append({"token": f"inst-{i}", "category_token": f"cat-{label}",
                                   "nbr_annotations": n_keyframes, "first_annotation_token": f"ann-{i}-0",
                                   "last_annotation_token": f"ann-{i}-{n_keyframes - 1}"})
        for k, token in enumerate(sample_tokens):
            fields = geometry.box_to_nuscenes(global_boxes[i])
            tables["sample_annotation"].append({
                "token": f"ann-{i}-{k}", "sample_token": token, "instance_token": f"inst-{i}",
                "visibility_token": "4", "attribute_tokens": ["attr-moving"] if label == "car" else [],
                "translation": fields["translation"], "size": fields["size"], "rotation": fields["rotation"],
                "prev": f"ann-{i}-{k - 1}" if k else "", "next": f"ann-{i}-{k + 1}" if k + 1 < n_keyframes else "",
                "num_lidar_pts": 5, "num_radar_pts": 0})
    for k in range(n_keyframes):
        stamp = T0_US + k * KEYFRAME_DT_US
        T_lidar_global = geometry.invert_transform(ego_at(stamp) @ rig["lidar2ego"])
        boxes = geometry.transform_boxes(T_lidar_global, global_boxes)
        boxes[:, 7:9] = 0.0  # static in the global frame: the devkit's box_velocity is 0
        truth["keyframes"].append({"stamp": stamp, "boxes": boxes, "labels": labels})
    assert set(labels) <= set(DETECTION_CLASSES)

    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return truth


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
