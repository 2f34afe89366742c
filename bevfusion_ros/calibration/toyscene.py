"""A small analytic scene with exact semantics, for tests and quick experiments (no dataset needed).

Ground plane (road / sidewalk by lateral position), vertical poles, boxes (cars) and walls, all ray-cast
exactly: the LiDAR (32 beams) and the camera images see the same geometry with correct occlusion, so the
semantic alignment loss has its minimum at the true extrinsics up to pixel quantization.

Classes: 0 road, 1 sidewalk, 2 pole, 3 car, 4 wall.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bevfusion_ros.calibration.semantics import IGNORE, CameraSemantics, SemanticFrame

ROAD, SIDEWALK, POLE, CAR, WALL = range(5)
GROUND_Z = -1.8


@dataclass
class ToyScene:
    poles: np.ndarray        # [P, 4] x, y, radius, height (base on the ground)
    boxes: np.ndarray        # [B, 8] x, y, z_center, l, w, h, yaw, class


def make_scene(seed: int = 0, num_poles: int = 14, num_cars: int = 8) -> ToyScene:
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-np.pi, np.pi, num_poles)
    dist = rng.uniform(5.0, 22.0, num_poles)
    poles = np.stack([dist * np.cos(angles), dist * np.sin(angles), rng.uniform(0.08, 0.2, num_poles),
                      rng.uniform(2.5, 5.0, num_poles)], 1)
    boxes = []
    for _ in range(num_cars):
        ang, d = rng.uniform(-np.pi, np.pi), rng.uniform(6.0, 25.0)
        length, width, height = rng.uniform(3.8, 4.8), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.8)
        boxes.append([d * np.cos(ang), d * np.sin(ang), GROUND_Z + height / 2, length, width, height,
                      rng.uniform(-np.pi, np.pi), CAR])
    for side in (-1, 1):                                   # walls along both sides of the street
        boxes.append([0.0, side * 14.0, GROUND_Z + 3.0, 80.0, 0.5, 6.0, 0.0, WALL])
    return ToyScene(poles, np.array(boxes, np.float64))


def ray_cast(scene: ToyScene, origin: np.ndarray, dirs: np.ndarray, max_range: float = 60.0
             ) -> tuple[np.ndarray, np.ndarray]:
    """(distance along unit dirs [M] (inf = no hit), class [M]) of rays from `origin` (scene frame)."""
    best = np.full(len(dirs), np.inf)
    label = np.full(len(dirs), IGNORE, np.int64)

    def take(t, cls):
        better = (t > 0.05) & (t < best)
        best[better] = t[better]
        label[better] = cls[better] if isinstance(cls, np.ndarray) else cls

    with np.errstate(divide="ignore", invalid="ignore"):
        t = (GROUND_Z - origin[2]) / dirs[:, 2]
        t = np.where(t > 0, t, np.inf)
        hit = origin + dirs * np.where(np.isfinite(t), t, 0)[:, None]
        take(t, np.where(np.abs(hit[:, 1]) < 5.0, ROAD, SIDEWALK))
        for x, y, radius, height in scene.poles:
            ox, oy = origin[0] - x, origin[1] - y
            a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
            b = 2 * (ox * dirs[:, 0] + oy * dirs[:, 1])
            c = ox * ox + oy * oy - radius * radius
            disc = b * b - 4 * a * c
            t = (-b - np.sqrt(np.where(disc > 0, disc, np.nan))) / (2 * a)
            z = origin[2] + dirs[:, 2] * t
            t = np.where((disc > 0) & (z > GROUND_Z) & (z < GROUND_Z + height), t, np.inf)
            take(t, POLE)
        for x, y, zc, length, width, height, yaw, cls in scene.boxes:
            cos, sin = np.cos(yaw), np.sin(yaw)
            rel = origin - np.array([x, y, zc])
            o = np.array([cos * rel[0] + sin * rel[1], -sin * rel[0] + cos * rel[1], rel[2]])
            d = np.stack([cos * dirs[:, 0] + sin * dirs[:, 1], -sin * dirs[:, 0] + cos * dirs[:, 1], dirs[:, 2]], 1)
            half = np.array([length, width, height]) / 2
            t1 = (-half - o) / d
            t2 = (half - o) / d
            t_near = np.nanmax(np.minimum(t1, t2), 1)
            t_far = np.nanmin(np.maximum(t1, t2), 1)
            t = np.where((t_near <= t_far) & (t_far > 0), t_near, np.inf)
            take(t, int(cls))
    best[best > max_range] = np.inf
    label[~np.isfinite(best)] = IGNORE
    return best, label


def lidar_scan(scene: ToyScene, beams: int = 32, azimuths: int = 1080) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR points [N, 3] and labels [N] (scene frame = LiDAR frame, LiDAR at the origin)."""
    elev = np.radians(np.linspace(-30.0, 10.0, beams))
    azim = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    ee, aa = np.meshgrid(elev, azim, indexing="ij")
    dirs = np.stack([np.cos(ee) * np.cos(aa), np.cos(ee) * np.sin(aa), np.sin(ee)], -1).reshape(-1, 3)
    dist, label = ray_cast(scene, np.zeros(3), dirs)
    ok = np.isfinite(dist)
    return (dirs[ok] * dist[ok, None]).astype(np.float32), label[ok]


def render_labels(scene: ToyScene, T_cam_lidar: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel class map of a pinhole camera (ray through each pixel centre)."""
    width, height = size
    uu, vv = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.linalg.solve(K, np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)]))
    T_lidar_cam = np.linalg.inv(T_cam_lidar)
    dirs = (T_lidar_cam[:3, :3] @ rays_cam).T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    _, label = ray_cast(scene, T_lidar_cam[:3, 3], dirs)
    return label.reshape(height, width)


def toy_rig(size: tuple[int, int] = (480, 270)) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four cameras (front, left, back, right) 0.3-1 m from the LiDAR: T_cam_lidar per camera, and K."""
    width, height = size
    focal = 0.6 * width
    K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])
    # optical axes: camera z = LiDAR direction at yaw, camera x = right, camera y = down
    rig = {}
    for name, yaw, offset in (("CAM_FRONT", 0.0, (0.8, 0.0, -0.3)), ("CAM_LEFT", np.pi / 2, (0.2, 0.5, -0.35)),
                              ("CAM_BACK", np.pi, (-0.6, 0.0, -0.3)), ("CAM_RIGHT", -np.pi / 2, (0.2, -0.5, -0.35))):
        forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        T_lidar_cam = np.eye(4)
        T_lidar_cam[:3, :3] = np.stack([right, down, forward], 1)
        T_lidar_cam[:3, 3] = offset
        rig[name] = np.linalg.inv(T_lidar_cam)
    return rig, K


def toy_frames(num_frames: int = 2, seed: int = 0, cameras: tuple[str, ...] | None = None,
               size: tuple[int, int] = (480, 270)) -> tuple[list[SemanticFrame], dict[str, np.ndarray]]:
    """`num_frames` independent scenes seen by the toy rig: (frames, true T_cam_lidar per camera)."""
    rig, K = toy_rig(size)
    if cameras is not None:
        rig = {name: rig[name] for name in cameras}
    frames = []
    for index in range(num_frames):
        scene = make_scene(seed * 1000 + index)
        points, labels = lidar_scan(scene)
        cams = {name: CameraSemantics(name, render_labels(scene, T, K, size), K) for name, T in rig.items()}
        frames.append(SemanticFrame(points, labels, cams, stamp_us=index * 500_000))
    return frames, rig
