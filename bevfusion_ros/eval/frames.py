"""nuScenes sample -> :class:`bevfusion_ros.frame.Frame`, and the sample's GT boxes in its LiDAR frame.

Offline evaluation uses the model engineer's ``bevfusion_ros.data.dataset.frame_from_sample`` when it
exists (the same loader training uses); :func:`frame_from_sample` here is the stand-alone fallback with the
same conventions (frame.py): the keyframe LIDAR_TOP sweep is the pivot; the previous ``sweeps - 1`` sweeps
are moved into the pivot LiDAR frame through the global frame (ego motion compensated) with their time
offset dt >= 0 in seconds; each camera's ``T_lidar_cam`` goes through the global frame at the camera's
own timestamp (nuScenes cameras fire up to ~40 ms from the LiDAR); images are RGB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bevfusion_ros.classes import ATTRIBUTES, CAMERA_NAMES, CATEGORY_TO_DETECTION, DETECTION_CLASSES, LIDAR_NAME
from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import CameraInput, Frame
from bevfusion_ros.geometry import box_from_nuscenes, invert_transform, make_transform, transform_boxes


def _pose(nusc, sd: dict) -> np.ndarray:
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return make_transform(np.asarray(pose["rotation"]), np.asarray(pose["translation"]))


def _calib(nusc, sd: dict) -> tuple[np.ndarray, np.ndarray | None]:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    K = np.asarray(cs["camera_intrinsic"], np.float64) if cs["camera_intrinsic"] else None
    return make_transform(np.asarray(cs["rotation"]), np.asarray(cs["translation"])), K


def _load_points(path: Path) -> np.ndarray:
    from bevfusion_ros.data.nuscenes_io import load_points
    return load_points(path)


def frame_from_sample(nusc, sample_token: str, sweeps: int = 1, load_images: bool = True) -> Frame:
    """The model input of one keyframe (see module docstring)."""
    import cv2

    sample = nusc.get("sample", sample_token)
    if LIDAR_NAME not in sample["data"]:
        raise UserError(f"sample {sample_token} has no {LIDAR_NAME} data")
    root = Path(nusc.dataroot)
    pivot = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    T_ego_lidar, _ = _calib(nusc, pivot)
    T_global_ego = _pose(nusc, pivot)
    T_lidar_global = invert_transform(T_global_ego @ T_ego_lidar)
    clouds = []
    sd = pivot
    for _ in range(max(1, int(sweeps))):
        pts = _load_points(root / sd["filename"])
        T_s, _ = _calib(nusc, sd)
        T = T_lidar_global @ _pose(nusc, sd) @ T_s
        xyz = pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        dt = np.full((len(pts), 1), (pivot["timestamp"] - sd["timestamp"]) * 1e-6)
        clouds.append(np.concatenate([xyz, pts[:, 3:4], dt], axis=1).astype(np.float32))
        if not sd["prev"]:
            break
        sd = nusc.get("sample_data", sd["prev"])
    points = np.concatenate(clouds, axis=0) if clouds else np.zeros((0, 5), np.float32)

    cameras = []
    for name in CAMERA_NAMES:
        token = sample["data"].get(name)
        if token is None:
            cameras.append(CameraInput(name, None, np.eye(3), np.eye(4), 0))
            continue
        cam_sd = nusc.get("sample_data", token)
        T_ego_cam, K = _calib(nusc, cam_sd)
        T_lidar_cam = T_lidar_global @ _pose(nusc, cam_sd) @ T_ego_cam
        image = None
        if load_images:
            bgr = cv2.imread(str(root / cam_sd["filename"]), cv2.IMREAD_COLOR)
            image = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)   # unreadable -> masked
        cameras.append(CameraInput(name, image, K if K is not None else np.eye(3), T_lidar_cam,
                                   int(cam_sd["timestamp"])))
    return Frame(stamp_us=int(pivot["timestamp"]), points=points, cameras=cameras, T_ego_lidar=T_ego_lidar,
                 T_global_ego=T_global_ego, frame_id=LIDAR_NAME)


def gt_boxes_lidar(nusc, sample_token: str, T_global_lidar: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [M,9] in the LiDAR frame, labels, attribute indices, num_pts) of the sample's detection-class
    annotations (velocity from the devkit's box_velocity, NaN -> 0)."""
    rows, labels, attrs, npts = [], [], [], []
    for ann_token in nusc.get("sample", sample_token)["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        name = CATEGORY_TO_DETECTION.get(ann["category_name"])
        if name is None:
            continue
        vel = nusc.box_velocity(ann_token)[:2]
        rows.append(box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"], vel))
        labels.append(DETECTION_CLASSES.index(name))
        names = [nusc.get("attribute", a)["name"] for a in ann["attribute_tokens"]]
        attrs.append(ATTRIBUTES.index(names[0]) if names and names[0] in ATTRIBUTES else -1)
        npts.append(int(ann.get("num_lidar_pts", 0)) + int(ann.get("num_radar_pts", 0)))
    if not rows:
        return np.zeros((0, 9)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    boxes = transform_boxes(invert_transform(T_global_lidar), np.array(rows))
    return boxes, np.array(labels), np.array(attrs), np.array(npts)
