"""Pictures of a generated frame (the README's): a camera image with the keyframe's LiDAR points projected
and coloured by depth, and a bird's-eye view of the sweep with the annotation boxes over the map layers.

    .venv/bin/python -m bevfusion_ros.data.synth.preview DATAROOT OUT_DIR [--scene NAME] [--sample K]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros.classes import CATEGORY_TO_DETECTION, LIDAR_NAME
from bevfusion_ros.data import nuscenes_io as io
from bevfusion_ros.geometry import box_corners, box_from_nuscenes, invert_transform, transform_points


def camera_with_points(nusc, root: Path, sample: dict, channel: str = "CAM_FRONT") -> np.ndarray:
    lidar_token = sample["data"][LIDAR_NAME]
    points = io.load_points(root / nusc.get("sample_data", lidar_token)["filename"])
    T_ego_lidar, _ = io.sensor_calibration(nusc, lidar_token)
    world = transform_points(io.ego_pose(nusc, lidar_token) @ T_ego_lidar, points[:, :3].astype(np.float64))
    cam_token = sample["data"][channel]
    T_ego_cam, K = io.sensor_calibration(nusc, cam_token)
    cam = transform_points(invert_transform(io.ego_pose(nusc, cam_token) @ T_ego_cam), world)
    image = cv2.imread(str(root / nusc.get("sample_data", cam_token)["filename"]))
    front = cam[:, 2] > 1.0
    uv = cam[front, :2] / cam[front, 2:3] * K[[0, 1], [0, 1]] + K[:2, 2]
    depth = cam[front, 2]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < image.shape[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < image.shape[0])
    uv, depth = uv[inside], depth[inside]
    colors = cv2.applyColorMap(np.clip(255 - depth / 60.0 * 255, 0, 255).astype(np.uint8)[:, None],
                               cv2.COLORMAP_JET)[:, 0]
    for (u, v), color in zip(uv.astype(int), colors):
        cv2.circle(image, (int(u), int(v)), 3, tuple(int(c) for c in color), -1)
    return image


def bev_plot(nusc, root: Path, sample: dict, path: Path, radius: float = 55.0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nuscenes.map_expansion.map_api import NuScenesMap
    lidar_token = sample["data"][LIDAR_NAME]
    T_global_ego = io.ego_pose(nusc, lidar_token)
    T_ego_lidar, _ = io.sensor_calibration(nusc, lidar_token)
    points = io.load_points(root / nusc.get("sample_data", lidar_token)["filename"])
    ego_pts = transform_points(T_ego_lidar, points[:, :3].astype(np.float64))
    location = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])["location"]
    nusc_map = NuScenesMap(str(root), location)
    yaw = np.degrees(np.arctan2(T_global_ego[1, 0], T_global_ego[0, 0]))
    x, y = T_global_ego[:2, 3]
    layers = ["drivable_area", "carpark_area", "walkway", "ped_crossing", "stop_line", "road_divider", "lane_divider"]
    size = int(2 * radius * 4)
    # Patch angle = ego heading: the mask's x axis is the ego's forward axis.
    masks = nusc_map.get_map_mask((x, y, 2 * radius, 2 * radius), yaw, layers, (size, size))
    colors = {"drivable_area": (0.75, 0.75, 0.78), "carpark_area": (0.95, 0.75, 0.45), "walkway": (0.6, 0.8, 0.6),
              "ped_crossing": (0.95, 0.55, 0.55), "stop_line": (0.9, 0.2, 0.2), "road_divider": (0.9, 0.75, 0.1),
              "lane_divider": (0.3, 0.3, 0.9)}
    canvas = np.ones((size, size, 3))
    for name, mask in zip(layers, masks):
        canvas[mask.astype(bool)] = colors[name]
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=100)
    ax.imshow(canvas, extent=(-radius, radius, -radius, radius), origin="lower")
    near = np.abs(ego_pts[:, :2]).max(1) < radius
    ax.scatter(ego_pts[near, 0], ego_pts[near, 1], s=0.15, c=np.clip(ego_pts[near, 2], -1, 3), cmap="viridis")
    palette = plt.get_cmap("tab10")
    classes = sorted(set(CATEGORY_TO_DETECTION.values()))
    T_ego_global = invert_transform(T_global_ego)
    for token in sample["anns"]:
        ann = nusc.get("sample_annotation", token)
        box = box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"])
        corners = transform_points(T_ego_global, box_corners(box[None])[0][:4])
        name = CATEGORY_TO_DETECTION[ann["category_name"]]
        ring = np.vstack([corners[:, :2], corners[:1, :2]])
        ax.plot(ring[:, 0], ring[:, 1], color=palette(classes.index(name) % 10), lw=1.0)
    for i, name in enumerate(classes):
        ax.plot([], [], color=palette(i % 10), label=name)
    ax.legend(loc="upper right", fontsize=6, ncol=2)
    ax.plot([0], [0], marker="^", color="k")
    ax.set_xlim(-radius, radius)
    ax.set_ylim(-radius, radius)
    ax.set_xlabel("ego x (m)")
    ax.set_ylabel("ego y (m)")
    ax.set_title(f"{nusc.get('scene', sample['scene_token'])['name']}: LiDAR, boxes, map layers", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_png_small(image_bgr: np.ndarray, path: Path, width: int = 1000) -> None:
    """A camera picture as a 128-colour PNG (about 200 KB at 1000 px wide)."""
    from PIL import Image
    small = cv2.resize(image_bgr, (width, width * image_bgr.shape[0] // image_bgr.shape[1]),
                       interpolation=cv2.INTER_AREA)
    Image.fromarray(small[..., ::-1]).quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataroot", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scene", default=None)
    parser.add_argument("--sample", type=int, default=0)
    args = parser.parse_args(argv)
    nusc = io.open_nuscenes(args.dataroot)
    scene = io.find_scene(nusc, args.scene) if args.scene else nusc.scene[0]
    token = scene["first_sample_token"]
    for _ in range(args.sample):
        token = nusc.get("sample", token)["next"] or token
    sample = nusc.get("sample", token)
    args.out.mkdir(parents=True, exist_ok=True)
    image = camera_with_points(nusc, args.dataroot, sample)
    save_png_small(image, args.out / "synth_camera_lidar.png")
    bev_plot(nusc, args.dataroot, sample, args.out / "synth_bev.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
