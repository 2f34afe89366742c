"""nuScenes-format training data (real or synthetic), and the Frame builder shared with evaluation.

- :func:`lidar_sweeps`: multi-sweep aggregation exactly like mmdet3d's ``LoadPointsFromMultiSweeps`` (as
  configured by BEVFusion): the keyframe sweep with Δt = 0, then the ``sweeps - 1`` most recent previous
  LIDAR_TOP sweeps, each motion-compensated into the keyframe LiDAR frame through the ego poses at their
  own timestamps, points within 1 m of the sensor removed, Δt = t_key - t_sweep in seconds; with no
  previous sweep at all the keyframe is repeated (``pad_empty_sweeps``).
- :func:`frame_from_sample`: a ``frame.Frame`` of a sample (points as above, six RGB images, K,
  ``T_lidar_cam`` through the ego poses at the camera and LiDAR stamps, ``T_ego_lidar``, ``T_global_ego``).
  Training and ``bevfusion-ros eval`` both build frames with it, so preprocessing is identical.
- :func:`sample_boxes_lidar`: GT boxes [M, 9] in the keyframe LiDAR frame with class and attribute
  indices (annotations without LiDAR or radar points dropped, as BEVFusion's ``use_valid_flag``).
- Map GT: ``eval.map_gt.sample_map_gt`` (NuScenesMap rasterized in the LiDAR frame, BEVFusion's protocol).
- :class:`BEVFusionDataset`: training samples. Each sample is preprocessed once into an ``.npz`` cache
  (points, images resized to the largest training scale, calibration, boxes, map GT); ``__getitem__``
  applies the random augmentation (``data/augment.py``) and builds the head targets.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from bevfusion_ros.classes import ATTRIBUTES, CAMERA_NAMES, CATEGORY_TO_DETECTION, DETECTION_CLASSES, LIDAR_NAME
from bevfusion_ros.data import augment
from bevfusion_ros.data.nuscenes_io import ego_pose, load_points, sensor_calibration
from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import CameraInput, Frame
from bevfusion_ros.geometry import box_from_nuscenes, invert_transform, transform_boxes
from bevfusion_ros.model.config import ModelConfig
from bevfusion_ros.model.preprocess import (image_aug_matrix, lidar_depth_maps, normalize_images,
                                           test_image_params, warp_image)
from bevfusion_ros.model.targets import build_targets

CACHE_VERSION = 2


# ----------------------------------------------------------------------------- frames


def _T_global_sensor(nusc, sd_token: str) -> tuple[np.ndarray, np.ndarray | None]:
    T_ego_sensor, K = sensor_calibration(nusc, sd_token)
    return ego_pose(nusc, sd_token) @ T_ego_sensor, K


def _remove_close(points: np.ndarray, radius: float = 1.0) -> np.ndarray:
    close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
    return points[~close]


def lidar_sweeps(nusc, lidar_sd_token: str, sweeps: int) -> np.ndarray:
    """[N, 5] float32 (x, y, z, intensity, dt) in the keyframe LiDAR frame (see module docstring)."""
    sd = nusc.get("sample_data", lidar_sd_token)
    key = load_points(Path(nusc.dataroot) / sd["filename"]).copy()
    key[:, 4] = 0.0
    parts = [key]
    T_global_key, _ = _T_global_sensor(nusc, lidar_sd_token)
    T_key_global = invert_transform(T_global_key)
    t_key = sd["timestamp"] / 1e6
    prev = sd["prev"]
    found = 0
    while prev and found < sweeps - 1:
        sweep_sd = nusc.get("sample_data", prev)
        pts = _remove_close(load_points(Path(nusc.dataroot) / sweep_sd["filename"]))
        T_global_sweep, _ = _T_global_sensor(nusc, prev)
        T = T_key_global @ T_global_sweep
        pts = pts.copy()
        pts[:, :3] = (pts[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        pts[:, 4] = t_key - sweep_sd["timestamp"] / 1e6
        parts.append(pts)
        prev = sweep_sd["prev"]
        found += 1
    if found == 0 and sweeps > 1:
        parts += [_remove_close(key)] * (sweeps - 1)
    return np.concatenate(parts, 0).astype(np.float32)


def frame_from_sample(nusc, sample_token: str, sweeps: int = 10, load_images: bool = True) -> Frame:
    """The Frame of a sample's keyframe (LIDAR_TOP pivot, six cameras in classes.CAMERA_NAMES order)."""
    try:
        sample = nusc.get("sample", sample_token)
    except KeyError:
        raise UserError(f"unknown sample token {sample_token!r}") from None
    lidar_sd = sample["data"][LIDAR_NAME]
    T_ego_lidar, _ = sensor_calibration(nusc, lidar_sd)
    T_global_ego = ego_pose(nusc, lidar_sd)
    T_lidar_global = invert_transform(T_global_ego @ T_ego_lidar)
    points = lidar_sweeps(nusc, lidar_sd, sweeps)
    cameras = []
    for name in CAMERA_NAMES:
        if name not in sample["data"]:
            raise UserError(f"sample {sample_token} has no {name} image")
        cam_sd_token = sample["data"][name]
        cam_sd = nusc.get("sample_data", cam_sd_token)
        T_global_cam, K = _T_global_sensor(nusc, cam_sd_token)
        image = None
        if load_images:
            path = Path(nusc.dataroot) / cam_sd["filename"]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"camera image {path} is missing or not decodable")
            image = np.ascontiguousarray(bgr[:, :, ::-1])
        cameras.append(CameraInput(name, image, K, T_lidar_global @ T_global_cam, int(cam_sd["timestamp"])))
    return Frame(stamp_us=int(sample["timestamp"]), points=points, cameras=cameras, T_ego_lidar=T_ego_lidar,
                 T_global_ego=T_global_ego, frame_id=LIDAR_NAME)


def sample_boxes_lidar(nusc, sample_token: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [M, 9] LiDAR frame, labels [M], attributes [M] (-1 none)) of a sample's annotations."""
    sample = nusc.get("sample", sample_token)
    lidar_sd = sample["data"][LIDAR_NAME]
    T_ego_lidar, _ = sensor_calibration(nusc, lidar_sd)
    T_lidar_global = invert_transform(ego_pose(nusc, lidar_sd) @ T_ego_lidar)
    boxes, labels, attrs = [], [], []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        name = CATEGORY_TO_DETECTION.get(ann["category_name"])
        if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] <= 0:
            continue
        velocity = nusc.box_velocity(ann_token)[:2]
        boxes.append(box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"], velocity))
        labels.append(DETECTION_CLASSES.index(name))
        attr = -1
        for tok in ann["attribute_tokens"][:1]:
            attr_name = nusc.get("attribute", tok)["name"]
            attr = ATTRIBUTES.index(attr_name) if attr_name in ATTRIBUTES else -1
        attrs.append(attr)
    if not boxes:
        return np.zeros((0, 9)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (transform_boxes(T_lidar_global, np.stack(boxes)), np.asarray(labels, np.int64),
            np.asarray(attrs, np.int64))


# ----------------------------------------------------------------------------- training dataset


class BEVFusionDataset(torch.utils.data.Dataset):
    """Training/validation samples of a nuScenes-format dataroot, cached as npz on first use."""

    def __init__(self, nusc, config: ModelConfig, cache_dir: str | Path, sample_tokens: list[str] | None = None,
                 train: bool = True, seed: int = 0):
        self.nusc = nusc
        self.config = config
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.tokens = list(sample_tokens) if sample_tokens is not None else [s["token"] for s in nusc.sample]
        if not self.tokens:
            raise UserError(f"no samples in {nusc.dataroot}")
        key = json.dumps({"v": CACHE_VERSION, "sweeps": config.lidar.sweeps, "cam": config.camera.image_size,
                          "resize": config.camera.resize_lim_train, "src": config.camera.source_width,
                          "map": [config.map.xbound, config.map.ybound, config.map.classes],
                          "root": str(Path(nusc.dataroot).resolve())}, sort_keys=True)
        self.cache_dir = Path(cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:12]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._maps = None

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -------------------------------------------------------------- cache
    def cache_path(self, token: str) -> Path:
        return self.cache_dir / f"{token}.npz"

    def build_cache(self, token: str) -> Path:
        from bevfusion_ros.eval.map_gt import MapCache, sample_map_gt
        path = self.cache_path(token)
        if path.is_file():
            return path
        cfg = self.config
        frame = frame_from_sample(self.nusc, token, cfg.lidar.sweeps)
        boxes, labels, attrs = sample_boxes_lidar(self.nusc, token)
        if cfg.map.enabled:
            if self._maps is None:
                self._maps = MapCache(self.nusc.dataroot)
            T_global_lidar = frame.T_global_ego @ frame.T_ego_lidar
            map_gt = sample_map_gt(self.nusc, token, cfg.map.xbound, cfg.map.ybound, cfg.map.classes,
                                   self._maps, T_global_lidar)
        else:
            map_gt = np.zeros((len(cfg.map.classes), *cfg.map_size), bool)
        images, scales = [], []
        for cam in frame.cameras:
            h, w = cam.image.shape[:2]
            scale = max(cfg.camera.resize_lim_train + [cfg.camera.resize_test]) * cfg.camera.source_width / w
            size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
            images.append(cv2.resize(cam.image, size, interpolation=cv2.INTER_AREA))
            scales.append([size[0] / w, size[1] / h, w, h])
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, points=frame.points, images=np.stack(images), image_scales=np.asarray(scales),
                 intrinsics=np.stack([c.intrinsic for c in frame.cameras]),
                 T_lidar_cam=np.stack([c.T_lidar_cam for c in frame.cameras]),
                 boxes=boxes, labels=labels, attrs=attrs, map_gt=np.packbits(map_gt, axis=-1),
                 map_shape=np.asarray(map_gt.shape))
        tmp.replace(path)
        return path

    def load(self, token: str) -> dict:
        with np.load(self.build_cache(token)) as data:
            out = {k: data[k] for k in data.files}
        shape = tuple(out.pop("map_shape"))
        out["map_gt"] = np.unpackbits(out["map_gt"], axis=-1)[..., : shape[-1]].astype(bool)
        return out

    # -------------------------------------------------------------- samples
    def __getitem__(self, index: int) -> dict:
        cfg = self.config
        token = self.tokens[index]
        data = self.load(token)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        fh, fw = cfg.camera.image_size
        images, augs = [], []
        for img, (sx, sy, w, h) in zip(data["images"], data["image_scales"]):
            if self.train and cfg.train.image_aug:
                _, M = augment.random_image_aug(cfg, int(w), int(h), rng)
            else:
                resize, crop = test_image_params(cfg, int(w), int(h))
                M = image_aug_matrix(resize, crop, False, 0.0, (fh, fw))
            to_cached = np.diag([sx, sy, 1.0])
            rest = M @ np.linalg.inv(to_cached)
            images.append(cv2.warpAffine(img, rest[:2], (fw, fh), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT))
            augs.append(M)
        points, boxes, map_gt = data["points"], data["boxes"].reshape(-1, 9), data["map_gt"]
        T_lidar_cam = data["T_lidar_cam"]
        if self.train:
            A = augment.random_lidar_aug(cfg, rng)
            points = augment.augment_points(points, A)
            boxes = augment.augment_boxes(boxes, A)
            map_gt = augment.augment_map(map_gt, A, cfg.map.xbound, cfg.map.ybound)
            T_lidar_cam = A[None] @ T_lidar_cam
        pcr = cfg.point_cloud_range
        keep = ((points[:, 0] >= pcr[0]) & (points[:, 0] < pcr[3]) & (points[:, 1] >= pcr[1])
                & (points[:, 1] < pcr[4]) & (points[:, 2] >= pcr[2]) & (points[:, 2] < pcr[5]))
        points = points[keep]
        camera_mask = np.ones(len(images), np.float32)
        if self.train and rng.random() < cfg.train.camera_dropout:
            camera_mask[:] = 0.0
        elif self.train and rng.random() < cfg.train.lidar_dropout:
            points = points[:0]
        targets = build_targets(boxes, data["labels"], data["attrs"], cfg)
        K = torch.from_numpy(data["intrinsics"]).float()
        T = torch.from_numpy(T_lidar_cam).float()
        aug = torch.from_numpy(np.stack(augs)).float()
        pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        sample = {
            "token": token,
            "points": pts,
            "images": normalize_images(np.stack(images), cfg),
            "intrinsics": K, "T_lidar_cam": T, "image_aug": aug,
            "camera_mask": torch.from_numpy(camera_mask),
            "map": torch.from_numpy(map_gt.astype(np.float32)),
            "gt_boxes": torch.from_numpy(boxes).float(),
            "gt_labels": torch.from_numpy(data["labels"]),
        }
        if cfg.use_camera and cfg.vtransform.lidar_depth:
            sample["lidar_depth"] = lidar_depth_maps(pts, K.double(), T.double(), aug.double(), (fh, fw))
        for key, value in targets.items():
            sample[key] = torch.from_numpy(value)
        return sample


def collate(samples: list[dict]) -> dict:
    batch: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("points", "gt_boxes", "gt_labels", "token"):
            batch[key] = values
        else:
            batch[key] = torch.stack(values)
    return batch
