"""One scene's sensor timeline: LiDAR sweeps, camera frames, their sample_data/ego_pose records, the
lidarseg labels and semantic masks of the keyframes, and the annotations (with visibility measured in the
images and num_lidar_pts counted by the ray caster)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros.classes import LIDAR_NAME
from bevfusion_ros.data.synth.camera import CameraRenderer
from bevfusion_ros.data.synth.ground import build_ground
from bevfusion_ros.data.synth.lidar import cast
from bevfusion_ros.data.synth.maps import map_geometry
from bevfusion_ros.data.synth.rig import Rig
from bevfusion_ros.data.synth.scenario import ANNOTATION_RADIUS, Scenario, build_scenario
from bevfusion_ros.data.synth.world import city_for
from bevfusion_ros.data.synth.writer import TableWriter, token, visibility_token
from bevfusion_ros.geometry import (make_transform, matrix_to_quat_wxyz, points_in_boxes, transform_points,
                                   yaw_to_quat_wxyz)

KEYFRAME_US = 500_000
LIDAR_HZ = 20
BASE_TIMESTAMP_US = 1_533_000_000_000_000     # 2018-07-31, in the nuScenes collection period


class _NoProgress:
    def update(self, n=1):
        pass

    def close(self):
        pass


class SceneGenerator:
    def __init__(self, config, rig: Rig, writer: TableWriter, root: Path, name: str, seed: int,
                 location: str, map_png: str, progress):
        self.config, self.rig, self.writer, self.root = config, rig, writer, root
        self.name, self.seed, self.location, self.map_png = name, seed, location, map_png
        self.progress = progress
        self.rng = np.random.default_rng(seed)
        self.city = city_for(location)
        duration = (config.keyframes - 1) * KEYFRAME_US / 1e6
        self.scenario: Scenario = build_scenario(self.city, self.rng, duration)
        self.t0_us = BASE_TIMESTAMP_US + int(name.split("-")[-1]) * 3_600_000_000 + (seed % 1_000_000_000)
        self.log_name = f"synth{seed % 10**8:08d}-2018-08-01-12-00-00+0800"

    # ------------------------------------------------------------------ helpers
    def T_world_ego(self, t: float) -> np.ndarray:  # noqa: N802
        xy, yaw = self.scenario.ego.pose(t)
        return make_transform(yaw_to_quat_wxyz(yaw), [xy[0], xy[1], 0.0])

    def world_boxes(self, t: float):
        """All boxes at time t (statics, then every agent's parts) and, per part box, its agent's index."""
        parts = [a.part_boxes(t) for a in self.scenario.agents]
        owners = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)]) if parts else np.zeros(0, int)
        boxes = np.concatenate([self.statics.boxes, *parts]) if parts else self.statics.boxes
        return boxes, owners

    def run(self) -> dict:
        cfg, w = self.config, self.writer
        ego = self.scenario.ego
        start_xy, _ = ego.pose(0.0)
        end_xy, _ = ego.pose(self.scenario.duration)
        margin = 130.0
        bounds = (min(start_xy[0], end_xy[0]) - margin, min(start_xy[1], end_xy[1]) - margin,
                  max(start_xy[0], end_xy[0]) + margin, max(start_xy[1], end_xy[1]) + margin)
        geom = map_geometry(self.city)
        self.ground = build_ground(self.city, geom, bounds, self.seed % 2**32)
        statics = self.city.statics
        inside = (statics.boxes[:, 0] > bounds[0] - 30) & (statics.boxes[:, 0] < bounds[2] + 30) & \
                 (statics.boxes[:, 1] > bounds[1] - 30) & (statics.boxes[:, 1] < bounds[3] + 30)
        self.statics = statics.select(inside)
        agents = self.scenario.agents
        part_cls = np.array([a.seg_class for a in agents for _ in a.parts], np.uint8)
        part_mat = np.array([p[7] for a in agents for p in a.parts], np.uint8)
        part_col = np.array([p[6] for a in agents for p in a.parts], np.uint8).reshape(-1, 3)
        self.box_cls = np.concatenate([self.statics.cls, part_cls])
        self.box_mat = np.concatenate([self.statics.material, part_mat])
        self.box_col = np.concatenate([self.statics.color, part_col])

        # Log, map, scene.
        log_token = token(w.key, "log", self.name)
        w.add("log", {"token": log_token, "logfile": self.log_name, "vehicle": "synth", "date_captured": "2018-08-01",
                      "location": self.location})
        w.add_map(self.location, self.map_png, log_token)
        scene_token = token(w.key, "scene", self.name)
        sample_tokens = [token(w.key, "sample", self.name, k) for k in range(cfg.keyframes)]
        key_us = [self.t0_us + k * KEYFRAME_US for k in range(cfg.keyframes)]
        w.add("scene", {"token": scene_token, "log_token": log_token, "nbr_samples": cfg.keyframes,
                        "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                        "name": self.name,
                        "description": f"synthetic, {self.location}, ego {ego.speed:.1f} m/s, seed {self.seed}"})
        for k, tok in enumerate(sample_tokens):
            w.add("sample", {"token": tok, "timestamp": key_us[k], "scene_token": scene_token,
                             "prev": sample_tokens[k - 1] if k else "",
                             "next": sample_tokens[k + 1] if k + 1 < len(sample_tokens) else ""})

        calib = {}
        for sensor in self.rig.sensors:
            tok = token(w.key, "calibrated_sensor", self.name, sensor.channel)
            w.add("calibrated_sensor", {
                "token": tok, "sensor_token": w.sensor_token(sensor.channel, sensor.modality),
                "translation": [float(v) for v in sensor.translation], "rotation": [float(v) for v in sensor.rotation],
                "camera_intrinsic": [] if sensor.intrinsic is None else sensor.intrinsic.tolist()})
            calib[sensor.channel] = tok

        stats = {"points_per_sweep": [], "annotations_per_sample": []}
        lidar_pts = self._lidar(calib, sample_tokens, key_us, stats)
        visible = self._cameras(calib, sample_tokens, key_us)
        self._annotations(sample_tokens, key_us, lidar_pts, visible, stats)
        return stats

    def _sample_data(self, channel: str, calib_token: str, sample_token: str, stamp_us: int, t: float,
                     is_key: bool, filename: str, fileformat: str, width: int, height: int) -> dict:
        w = self.writer
        sd_token = token(w.key, "sample_data", self.name, channel, stamp_us)
        T = self.T_world_ego(t)
        w.add("ego_pose", {"token": sd_token, "timestamp": stamp_us,
                           "rotation": [float(v) for v in matrix_to_quat_wxyz(T[:3, :3])],
                           "translation": [float(v) for v in T[:3, 3]]})
        return w.add("sample_data", {"token": sd_token, "sample_token": sample_token, "ego_pose_token": sd_token,
                                     "calibrated_sensor_token": calib_token, "timestamp": stamp_us,
                                     "fileformat": fileformat, "is_key_frame": bool(is_key), "height": height,
                                     "width": width, "filename": filename, "prev": "", "next": ""})

    @staticmethod
    def _chain(records: list[dict]) -> None:
        for prev, nxt in zip(records[:-1], records[1:]):
            prev["next"] = nxt["token"]
            nxt["prev"] = prev["token"]

    def _lidar(self, calib, sample_tokens, key_us, stats) -> dict[tuple[int, int], int]:
        cfg = self.config
        model = cfg.lidar
        dirs = model.directions()
        T_ego_lidar = self.rig.lidar.T_ego_sensor
        per_key = LIDAR_HZ // 2
        n_sweeps = (cfg.keyframes - 1) * per_key + 1
        records, hits = [], {}
        for folder in ("samples", "sweeps"):
            (self.root / folder / LIDAR_NAME).mkdir(parents=True, exist_ok=True)
        if cfg.semantic:
            (self.root / "lidarseg" / self.writer.version).mkdir(parents=True, exist_ok=True)
        for j in range(n_sweeps):
            t = j / LIDAR_HZ
            stamp = key_us[0] + j * (1_000_000 // LIDAR_HZ)
            is_key = j % per_key == 0
            k = j // per_key
            sample_token = sample_tokens[k] if is_key else sample_tokens[min(k + 1, len(sample_tokens) - 1)]
            boxes, _ = self.world_boxes(t)
            T_world_lidar = self.T_world_ego(t) @ T_ego_lidar
            sweep = cast(model, dirs, T_world_lidar, boxes, self.box_cls, self.box_mat, self.ground, self.rng)
            folder = "samples" if is_key else "sweeps"
            filename = f"{folder}/{LIDAR_NAME}/{self.log_name}__{LIDAR_NAME}__{stamp}.pcd.bin"
            sweep.points.tofile(self.root / filename)
            rec = self._sample_data(LIDAR_NAME, calib[LIDAR_NAME], sample_token, stamp, t, is_key, filename, "pcd",
                                    0, 0)
            records.append(rec)
            if is_key:
                stats["points_per_sweep"].append(len(sweep.points))
                # num_lidar_pts as nuScenes defines it: the sweep's points inside the annotation box.
                counts = _points_per_box(sweep.points, T_world_lidar, [a.box(t) for a in self.scenario.agents])
                for agent_index, count in enumerate(counts):
                    hits[(k, agent_index)] = int(count)
                if cfg.semantic:
                    label_file = f"lidarseg/{self.writer.version}/{rec['token']}_lidarseg.bin"
                    sweep.labels.astype(np.uint8).tofile(self.root / label_file)
                    # As in nuScenes-lidarseg, the record's token is the sample_data token (the devkit looks
                    # labels up by it).
                    self.writer.lidarseg.append({"token": rec["token"],
                                                 "sample_data_token": rec["token"], "filename": label_file})
            self.progress.update(1)
        self._chain(records)
        return hits

    def _cameras(self, calib, sample_tokens, key_us) -> dict[tuple[int, int], list[float]]:
        """Renders every camera frame; returns per (keyframe, agent) [visible samples, total samples]."""
        cfg = self.config
        sun = np.array([np.cos(self.seed % 360), np.sin(self.seed % 360), 1.2])
        per_key = cfg.camera_hz // 2
        n_frames = (cfg.keyframes - 1) * per_key + 1
        visible: dict[tuple[int, int], list[float]] = {}
        for camera in self.rig.cameras:
            renderer = _renderer(camera, sun)
            for folder in ("samples", "sweeps"):
                (self.root / folder / camera.channel).mkdir(parents=True, exist_ok=True)
            if cfg.semantic:
                (self.root / "semantic" / self.writer.version).mkdir(parents=True, exist_ok=True)
            records = []
            for j in range(n_frames):
                k, sub = divmod(j, per_key)
                is_key = sub == 0
                stamp = key_us[0] + j * KEYFRAME_US // per_key + camera.time_offset_us
                t = (stamp - key_us[0]) / 1e6
                boxes, owners = self.world_boxes(t)
                owner_ids = np.concatenate([np.full(len(self.statics.boxes), -1), owners])
                T_world_ego = self.T_world_ego(t)
                frame = renderer.render(T_world_ego, self.ground, boxes, self.box_col, self.box_cls, owner_ids,
                                        self.rng, labels=is_key)
                folder = "samples" if is_key else "sweeps"
                filename = f"{folder}/{camera.channel}/{self.log_name}__{camera.channel}__{stamp}.jpg"
                cv2.imwrite(str(self.root / filename), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
                sample_token = sample_tokens[k] if is_key else sample_tokens[min(k + 1, len(sample_tokens) - 1)]
                rec = self._sample_data(camera.channel, calib[camera.channel], sample_token, stamp, t, is_key,
                                        filename, "jpg", camera.width, camera.height)
                records.append(rec)
                if is_key:
                    if cfg.semantic:
                        cv2.imwrite(str(self.root / "semantic" / self.writer.version / f"{rec['token']}.png"),
                                    frame.semantic)
                    self._visibility(k, t, renderer, T_world_ego, frame.owner, visible)
                self.progress.update(1)
            self._chain(records)
        return visible

    def _visibility(self, k, t, renderer: CameraRenderer, T_world_ego, owner_image, visible) -> None:
        """Sample points on the camera-facing faces of each agent's parts; count those the image shows."""
        T_world_cam = T_world_ego @ renderer.T_ego_cam
        T_cam_world = np.linalg.inv(T_world_cam)
        ego_xy = T_world_ego[:2, 3]
        near = [i for i, a in enumerate(self.scenario.agents)
                if np.hypot(*(a.box(t)[:2] - ego_xy)) <= ANNOTATION_RADIUS + 5]
        if not near:
            return
        parts = [self.scenario.agents[i].part_boxes(t) for i in near]
        part_owner = np.concatenate([np.full(len(p), i) for i, p in zip(near, parts)])
        points, point_part = _face_samples(np.concatenate(parts), T_world_cam[:3, 3])
        if not len(points):
            return
        agent_of = part_owner[point_part]
        cam = points @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        K = renderer.K
        front = cam[:, 2] > 0.2
        uv = np.full((len(cam), 2), -1.0)
        uv[front] = cam[front, :2] / cam[front, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < renderer.width) & (uv[:, 1] >= 0) & \
            (uv[:, 1] < renderer.height)
        if not inside.any():
            return
        px = np.round(uv[inside]).astype(int).clip(0, [renderer.width - 1, renderer.height - 1])
        seen = owner_image[px[:, 1], px[:, 0]] == agent_of[inside]
        n_agents = len(self.scenario.agents)
        total = np.bincount(agent_of[inside], minlength=n_agents)
        shown = np.bincount(agent_of[inside][seen], minlength=n_agents)
        for index in np.nonzero(total)[0]:
            entry = visible.setdefault((k, int(index)), [0.0, 0.0])
            entry[0] += int(shown[index])
            entry[1] += int(total[index])

    def _annotations(self, sample_tokens, key_us, hits, visible, stats) -> None:
        w = self.writer
        ego = self.scenario.ego
        per_instance: dict[int, list[dict]] = {}
        counts = []
        for k, sample_token in enumerate(sample_tokens):
            t = (key_us[k] - key_us[0]) / 1e6
            ego_xy, _ = ego.pose(t)
            n = 0
            for index, agent in enumerate(self.scenario.agents):
                box = agent.box(t)
                if np.hypot(*(box[:2] - ego_xy)) > ANNOTATION_RADIUS:
                    continue
                seen, total = visible.get((k, index), (0.0, 0.0))
                attribute = agent.attribute(t)
                record = w.add("sample_annotation", {
                    "token": token(w.key, "sample_annotation", self.name, k, index),
                    "sample_token": sample_token,
                    "instance_token": token(w.key, "instance", self.name, index),
                    "visibility_token": visibility_token(seen / total if total else 0.0),
                    "attribute_tokens": [w.attribute_token[attribute]] if attribute else [],
                    "translation": [float(box[0]), float(box[1]), float(box[2])],
                    "size": [float(box[4]), float(box[3]), float(box[5])],
                    "rotation": [float(v) for v in yaw_to_quat_wxyz(box[6])],
                    "prev": "", "next": "",
                    "num_lidar_pts": hits.get((k, index), 0), "num_radar_pts": 0})
                per_instance.setdefault(index, []).append(record)
                n += 1
            counts.append(n)
        stats["annotations_per_sample"].extend(counts)
        for index, records in per_instance.items():
            self._chain(records)
            agent = self.scenario.agents[index]
            w.add("instance", {"token": token(w.key, "instance", self.name, index),
                               "category_token": w.category_token[agent.category],
                               "nbr_annotations": len(records), "first_annotation_token": records[0]["token"],
                               "last_annotation_token": records[-1]["token"]})


def _points_per_box(points: np.ndarray, T_world_lidar: np.ndarray, boxes: list[np.ndarray]) -> np.ndarray:
    """Number of sweep points (sensor frame) inside each world box [x, y, z, l, w, h, yaw]."""
    if not boxes:
        return np.zeros(0, int)
    boxes = np.asarray(boxes)
    world = transform_points(T_world_lidar, points[:, :3].astype(np.float64))
    counts = np.zeros(len(boxes), int)
    for start in range(0, len(boxes), 32):          # bounded memory: points x 32 boxes at a time
        counts[start:start + 32] = points_in_boxes(world, boxes[start:start + 32]).sum(0)
    return counts


_RENDERERS: dict[tuple[str, tuple], CameraRenderer] = {}


def _renderer(camera, sun) -> CameraRenderer:
    key = (camera.channel, tuple(np.round(camera.intrinsic.ravel(), 6)) + tuple(np.round(camera.rotation, 9)))
    if key not in _RENDERERS:
        _RENDERERS[key] = CameraRenderer(camera, sun)
    renderer = _RENDERERS[key]
    renderer.sun = sun / np.linalg.norm(sun)
    return renderer


def _face_samples(parts: np.ndarray, cam_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (world) at 5 places on each camera-facing side face and top face of each part box [P, 7];
    returns (points [M, 3], part index [M])."""
    n = len(parts)
    c, s = np.cos(parts[:, 6]), np.sin(parts[:, 6])
    zero, one = np.zeros(n), np.ones(n)
    fwd = np.stack([c, s, zero], 1)
    left = np.stack([-s, c, zero], 1)
    up = np.stack([zero, zero, one], 1)
    length, width, height = parts[:, 3:4], parts[:, 4:5], parts[:, 5:6]
    faces = [(fwd, length, left, width, up, height), (-fwd, length, left, width, up, height),
             (left, width, fwd, length, up, height), (-left, width, fwd, length, up, height),
             (up, height, fwd, length, left, width)]
    grid = np.array([[0.0, 0.0], [-0.3, -0.3], [0.3, -0.3], [-0.3, 0.3], [0.3, 0.3]])
    points, owners = [], []
    for normal, size_n, axis_a, size_a, axis_b, size_b in faces:
        centre = parts[:, :3] + normal * (size_n / 2 + 0.005)
        facing = np.einsum("ij,ij->i", normal, cam_pos - centre) > 0
        if not facing.any():
            continue
        for ga, gb in grid:
            p = centre + axis_a * ga * size_a + axis_b * gb * size_b
            points.append(p[facing])
            owners.append(np.nonzero(facing)[0])
    if not points:
        return np.zeros((0, 3)), np.zeros(0, int)
    return np.concatenate(points), np.concatenate(owners)
