"""Rig calibration files ``calib/<rig>.yaml``: read, validate, write atomically with a backup.

Schema (Autoware style: a list of parent -> child transforms, angles on disk only; matrices in code)::

    rig: nuscenes                  # name, = file stem
    base_frame: base_link
    lidar_frame: LIDAR_TOP
    transforms:                    # pose of `child` in `parent` (maps child-frame points into parent)
      - {parent: base_link, child: LIDAR_TOP, x: 0.94, y: 0.0, z: 1.84, roll: ..., pitch: ..., yaw: ...}
      - {parent: base_link, child: CAM_FRONT, x: ..., y: ..., z: ..., roll: ..., pitch: ..., yaw: ...}
    sensors:                       # derived from `transforms` on every write (never read back here):
      LIDAR_TOP: {translation: [x, y, z], rotation: [w, x, y, z]}   # T_base_sensor, for the perception
      CAM_FRONT: {...}                                               # node's `sensors:` reader
    metadata: {source: ..., updated: ..., loss: ...}    # free-form, optional

x, y, z in metres; roll, pitch, yaw in radians, R = Rz(yaw) Ry(pitch) Rx(roll) (ROS/URDF fixed-axis RPY).
A camera's parent is the base frame or the LiDAR frame; every child has exactly one parent.
:func:`load_rig_calibration` returns ``{camera: T_lidar_cam}`` (camera optical frame -> LiDAR frame).

Writes are atomic: the new content is validated, written to a temporary file in the same folder, fsynced
and renamed over the target; the previous file is kept as ``<name>.yaml.bak``. A crash at any point leaves
either the old or the new file, never a half-written one.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from bevfusion_ros.errors import UserError


class CalibrationFileError(UserError):
    """A calibration YAML is missing, unreadable, or fails validation."""


# ----------------------------------------------------------------------------- RPY


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_to_rpy(rot: np.ndarray) -> tuple[float, float, float]:
    rot = np.asarray(rot, np.float64)
    sp = -rot[2, 0]
    if abs(sp) > 1.0 - 1e-12:                      # gimbal lock: yaw absorbs roll
        pitch = math.copysign(math.pi / 2, sp)
        return 0.0, pitch, math.atan2(-rot[0, 1], rot[1, 1])
    return (math.atan2(rot[2, 1], rot[2, 2]), math.asin(float(np.clip(sp, -1.0, 1.0))),
            math.atan2(rot[1, 0], rot[0, 0]))


def transform_to_entry(parent: str, child: str, T: np.ndarray) -> dict:
    roll, pitch, yaw = matrix_to_rpy(T[:3, :3])
    x, y, z = (float(v) for v in T[:3, 3])
    return {"parent": parent, "child": child, "x": x, "y": y, "z": z, "roll": roll, "pitch": pitch, "yaw": yaw}


def entry_to_transform(entry: dict) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rpy_to_matrix(entry["roll"], entry["pitch"], entry["yaw"])
    T[:3, 3] = [entry["x"], entry["y"], entry["z"]]
    return T


# ----------------------------------------------------------------------------- model


@dataclass
class RigCalibration:
    """Parsed rig file: ``transforms[(parent, child)] = T_parent_child``."""

    rig: str
    base_frame: str
    lidar_frame: str
    transforms: dict[tuple[str, str], np.ndarray]
    metadata: dict = field(default_factory=dict)

    def T_base(self, frame: str) -> np.ndarray:
        """T_base_frame by walking parents up to the base frame."""
        T, current, seen = np.eye(4), frame, set()
        while current != self.base_frame:
            parents = [(p, c) for (p, c) in self.transforms if c == current]
            if not parents or current in seen:
                raise CalibrationFileError(f"rig {self.rig}: frame {current!r} does not connect to {self.base_frame!r}")
            seen.add(current)
            T = self.transforms[parents[0]] @ T
            current = parents[0][0]
        return T

    @property
    def cameras(self) -> list[str]:
        return [child for (_, child) in self.transforms if child not in (self.lidar_frame, self.base_frame)]

    def T_lidar_cam(self) -> dict[str, np.ndarray]:
        T_base_lidar = self.T_base(self.lidar_frame)
        inv = np.linalg.inv(T_base_lidar)
        return {cam: inv @ self.T_base(cam) for cam in self.cameras}


def _number(entry: dict, key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CalibrationFileError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_rig(data: object, where: str) -> RigCalibration:
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    for key in ("rig", "base_frame", "lidar_frame", "transforms"):
        if key not in data:
            raise CalibrationFileError(f"{where}: missing key {key!r}")
    if not isinstance(data["transforms"], list) or not data["transforms"]:
        raise CalibrationFileError(f"{where}: 'transforms' must be a non-empty list")
    transforms: dict[tuple[str, str], np.ndarray] = {}
    children: set[str] = set()
    for index, entry in enumerate(data["transforms"]):
        item = f"{where}: transforms[{index}]"
        if not isinstance(entry, dict):
            raise CalibrationFileError(f"{item}: expected a mapping")
        parent, child = entry.get("parent"), entry.get("child")
        if not isinstance(parent, str) or not isinstance(child, str) or not parent or not child:
            raise CalibrationFileError(f"{item}: 'parent' and 'child' must be frame names")
        if child in children:
            raise CalibrationFileError(f"{item}: frame {child!r} has more than one parent")
        children.add(child)
        values = {key: _number(entry, key, item) for key in ("x", "y", "z", "roll", "pitch", "yaw")}
        transforms[(parent, child)] = entry_to_transform(values)
    rig = RigCalibration(rig=str(data["rig"]), base_frame=str(data["base_frame"]),
                         lidar_frame=str(data["lidar_frame"]), transforms=transforms,
                         metadata=dict(data.get("metadata") or {}))
    if rig.lidar_frame not in children:
        raise CalibrationFileError(f"{where}: no transform for the LiDAR frame {rig.lidar_frame!r}")
    for cam in rig.cameras:
        rig.T_base(cam)          # every frame must reach the base
    return rig


def load_rig(path: str | Path) -> RigCalibration:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise CalibrationFileError(f"cannot read calibration {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CalibrationFileError(f"calibration {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_rig(data, str(path))


def load_rig_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """``{camera_name: T_lidar_cam (4x4)}`` from ``calib/<rig>.yaml``. Raises CalibrationFileError."""
    return load_rig(path).T_lidar_cam()


def rig_to_dict(rig: RigCalibration) -> dict:
    from bevfusion_ros.geometry import matrix_to_quat_wxyz
    sensors = {}
    for (_, child) in rig.transforms:
        T = rig.T_base(child)
        sensors[child] = {"translation": [float(v) for v in T[:3, 3]],
                          "rotation": [float(v) for v in matrix_to_quat_wxyz(T[:3, :3])]}
    return {
        "rig": rig.rig, "base_frame": rig.base_frame, "lidar_frame": rig.lidar_frame,
        "transforms": [transform_to_entry(p, c, T) for (p, c), T in rig.transforms.items()],
        # Derived, written for readers of the `sensors:` layout (perception/calibration_file.py):
        # T_base_sensor as translation + quaternion (w, x, y, z). `transforms` is authoritative.
        "sensors": sensors,
        "metadata": rig.metadata,
    }


def make_rig(rig: str, T_base_lidar: np.ndarray, T_lidar_cam: dict[str, np.ndarray], base_frame: str = "base_link",
             lidar_frame: str = "LIDAR_TOP", metadata: dict | None = None) -> RigCalibration:
    """A rig whose cameras hang off the base frame: T_base_cam = T_base_lidar @ T_lidar_cam."""
    transforms = {(base_frame, lidar_frame): np.asarray(T_base_lidar, np.float64)}
    for cam, T in T_lidar_cam.items():
        transforms[(base_frame, cam)] = np.asarray(T_base_lidar, np.float64) @ np.asarray(T, np.float64)
    return RigCalibration(rig, base_frame, lidar_frame, transforms, dict(metadata or {}))


def _check_rigid(rig: RigCalibration) -> None:
    for (parent, child), T in rig.transforms.items():
        rot = T[:3, :3]
        if (not np.all(np.isfinite(T)) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6)
                or abs(np.linalg.det(rot) - 1.0) > 1e-6):
            raise CalibrationFileError(f"refusing to write {parent}->{child}: not a finite rigid transform")


def save_rig(path: str | Path, rig: RigCalibration) -> Path:
    """Validate and write atomically; the previous file (if any) becomes ``<path>.bak``."""
    path = Path(path)
    _check_rigid(rig)
    data = rig_to_dict(rig)
    data["metadata"] = {**data["metadata"], "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    text = ("# bevfusion_ros rig calibration. Each transform is the pose of `child` in `parent` (maps child-frame\n"
            "# points into parent). x, y, z [m]; roll, pitch, yaw [rad], R = Rz(yaw) Ry(pitch) Rx(roll).\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=140))
    parse_rig(yaml.safe_load(text), str(path))        # what we write must read back
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            backup = path.with_name(path.name + ".bak")
            fd_b, tmp_b = tempfile.mkstemp(prefix=f".{backup.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd_b)
            shutil.copy2(path, tmp_b)
            os.replace(tmp_b, backup)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_rig_calibration(path: str | Path, T_lidar_cam: dict[str, np.ndarray], T_base_lidar: np.ndarray | None = None,
                         rig: str | None = None, metadata: dict | None = None) -> Path:
    """Write ``{camera: T_lidar_cam}`` (+ the LiDAR's pose in base_link; kept from the existing file when
    None, identity if there is none). Cameras of the existing file that are not given are kept."""
    path = Path(path)
    existing = load_rig(path) if path.exists() else None
    if T_base_lidar is None:
        T_base_lidar = existing.T_base(existing.lidar_frame) if existing else np.eye(4)
    cams = dict(existing.T_lidar_cam()) if existing else {}
    cams.update(T_lidar_cam)
    meta = dict(existing.metadata) if existing else {}
    meta.update(metadata or {})
    new = make_rig(rig or (existing.rig if existing else path.stem), T_base_lidar, cams,
                   existing.base_frame if existing else "base_link",
                   existing.lidar_frame if existing else "LIDAR_TOP", meta)
    return save_rig(path, new)
