"""Thin helpers over the nuScenes devkit, for the real dataset and the synthetic one alike.

Everything a user can get wrong (path, version, missing or corrupt table, unknown scene, corrupt point
file) is raised as :class:`UserError` with one clear message, never as a devkit assertion or traceback.

Ground-truth semantics beside a synthetic dataset (same class indices, the nuScenes-lidarseg ones):
- ``lidarseg/<version>/<lidar_sd_token>_lidarseg.bin``: uint8 per point of a keyframe LIDAR_TOP sweep
  (listed in ``<version>/lidarseg.json``), read with :func:`load_lidarseg`;
- ``semantic/<version>/<camera_sd_token>.png``: uint8 class per pixel of a keyframe camera image
  (0 where no surface is seen: sky), read with :func:`load_semantic_mask`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bevfusion_ros.errors import UserError
from bevfusion_ros.geometry import make_transform

VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
REQUIRED_TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
                   "log", "scene", "sample", "sample_data", "sample_annotation", "map")
POINT_FIELDS = 5          # x, y, z, intensity, ring (float32)


def infer_version(dataroot) -> str:
    """The table folder under `dataroot` (v1.0-trainval, v1.0-mini or v1.0-test); UserError if none or several."""
    root = Path(dataroot)
    if not root.is_dir():
        raise UserError(f"nuScenes dataroot {root} is not a directory")
    found = [v for v in VERSIONS if (root / v).is_dir()]
    if not found:
        raise UserError(f"no nuScenes table folder ({', '.join(VERSIONS)}) in {root}")
    if len(found) > 1:
        raise UserError(f"several nuScenes versions in {root} ({', '.join(found)}); pass the version explicitly")
    return found[0]


def open_nuscenes(dataroot, version: str | None = None, verbose: bool = False):
    """The devkit's NuScenes for `dataroot`/`version` (inferred when None). A wrong path, an unknown version,
    a missing table, a corrupt JSON (named) or tables the devkit rejects (e.g. lidarseg label files that do not
    match lidarseg.json) give one UserError; tables are read once, by the devkit."""
    root = Path(dataroot)
    if not root.is_dir():
        raise UserError(f"nuScenes dataroot {root} is not a directory")
    if version is None:
        version = infer_version(root)
    if version not in VERSIONS:
        raise UserError(f"unknown nuScenes version {version!r}; expected one of {', '.join(VERSIONS)}")
    table_dir = root / version
    if not table_dir.is_dir():
        raise UserError(f"no table folder {table_dir} (version {version} not in {root})")
    optional = [t for t in ("lidarseg", "panoptic") if (table_dir / f"{t}.json").is_file()]
    for table in REQUIRED_TABLES:
        if not (table_dir / f"{table}.json").is_file():
            raise UserError(f"nuScenes table {table_dir / table}.json is missing")
    from nuscenes import NuScenes
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=verbose)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(_first_corrupt_table(table_dir, (*REQUIRED_TABLES, *optional))) from None
    except (AssertionError, KeyError, TypeError, FileNotFoundError) as err:
        raise UserError(f"nuScenes dataset at {root} ({version}) is inconsistent: {err}") from None


def _first_corrupt_table(table_dir: Path, tables) -> str:
    """The message naming the first table that is not valid JSON (only called after loading failed)."""
    for table in tables:
        path = table_dir / f"{table}.json"
        try:
            with open(path) as handle:
                json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return f"nuScenes table {path} is not valid JSON ({err})"
    return f"a nuScenes table in {table_dir} is not valid JSON"


def find_scene(nusc, name: str) -> dict:
    """The scene record named `name` (e.g. 'scene-0103'); UserError listing a few known names otherwise."""
    for scene in nusc.scene:
        if scene["name"] == name:
            return scene
    known = sorted(s["name"] for s in nusc.scene)
    shown = ", ".join(known[:8]) + (" ..." if len(known) > 8 else "")
    raise UserError(f"unknown scene {name!r} in {nusc.dataroot} ({nusc.version}); known: {shown}")


def load_points(path) -> np.ndarray:
    """A ``.pcd.bin`` sweep as float32 [N, 5] (x, y, z, intensity, ring) in the sensor frame."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise UserError(f"point file {path} does not exist") from None
    if size % (4 * POINT_FIELDS):
        raise UserError(f"point file {path} is corrupt: {size} bytes is not a multiple of "
                        f"{4 * POINT_FIELDS} (5 float32 per point)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, POINT_FIELDS)


def sensor_calibration(nusc, sd_token: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(T_ego_sensor 4x4, K 3x3 or None for non-cameras) of a sample_data record."""
    sd = nusc.get("sample_data", sd_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    K = np.asarray(cs["camera_intrinsic"], np.float64) if cs["camera_intrinsic"] else None
    return make_transform(np.asarray(cs["rotation"]), np.asarray(cs["translation"])), K


def ego_pose(nusc, sd_token: str) -> np.ndarray:
    """T_global_ego (4x4) at the sample_data's timestamp."""
    sd = nusc.get("sample_data", sd_token)
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return make_transform(np.asarray(pose["rotation"]), np.asarray(pose["translation"]))


def eval_set_for(nusc) -> str:
    """The devkit evaluation split that holds the dataset's scenes and matches its version: 'mini_val' /
    'mini_train' for v1.0-mini, 'val' / 'train' for v1.0-trainval (val preferred when both are present),
    'test' for v1.0-test."""
    from nuscenes.utils.splits import create_splits_scenes
    splits = create_splits_scenes()
    names = {s["name"] for s in nusc.scene}
    if nusc.version.endswith("test"):
        return "test"
    candidates = ("mini_val", "mini_train") if nusc.version.endswith("mini") else ("val", "train")
    for split in candidates:
        if names & set(splits[split]):
            return split
    raise UserError(f"no scene of {nusc.dataroot} ({nusc.version}) belongs to a devkit split "
                    f"({', '.join(candidates)}); scene names must be real nuScenes names")


def load_lidarseg(dataroot, version: str, lidar_sd_token: str) -> np.ndarray:
    """uint8 lidarseg class per point of a keyframe LIDAR_TOP sample_data (nuScenes-lidarseg indices)."""
    path = Path(dataroot) / "lidarseg" / version / f"{lidar_sd_token}_lidarseg.bin"
    if not path.is_file():
        raise UserError(f"no lidarseg labels {path}")
    return np.fromfile(path, dtype=np.uint8)


def load_semantic_mask(dataroot, version: str, sd_token: str) -> np.ndarray:
    """uint8 [H, W] lidarseg class per pixel of a keyframe camera image (0 = no surface / sky)."""
    import cv2
    path = Path(dataroot) / "semantic" / version / f"{sd_token}.png"
    if not path.is_file():
        raise UserError(f"no semantic mask {path}")
    mask = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2:
        raise UserError(f"semantic mask {path} is corrupt (expected a single-channel PNG)")
    return mask
