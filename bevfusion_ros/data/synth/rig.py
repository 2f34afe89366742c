"""The sensor rig: the real nuScenes rig (six 1600x900 cameras, LIDAR_TOP) as the synthetic car carries it.

Source of truth is ``sample.json`` of the real nuScenes keyframe in ``../shared/data/nuscenes-sample``
(nuScenes v1.0, CC BY-NC-SA 4.0). Its numbers are also embedded below (copied verbatim, full precision) so
the generator works where that folder is absent; :func:`load_rig` reads the file when it exists and the
test suite checks the two agree.

Rotations are re-orthonormalized through a (w, x, y, z) quaternion: what the generator renders with is
exactly what it writes into ``calibrated_sensor``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bevfusion_ros.classes import CAMERA_NAMES, LIDAR_NAME
from bevfusion_ros.geometry import make_transform, matrix_to_quat_wxyz

IMAGE_WIDTH, IMAGE_HEIGHT = 1600, 900

# sample.json "lidar.lidar2ego"
_LIDAR2EGO = [[0.0020332718268036842, 0.9997040629386902, 0.024241721257567406, 0.9437130093574524],
              [-0.9999805092811584, 0.0021756570786237717, -0.00584863917902112, 0.0],
              [-0.005899650044739246, -0.02422935888171196, 0.9996890425682068, 1.8402299880981445],
              [0.0, 0.0, 0.0, 1.0]]

# sample.json "cameras.<name>": cam2img, cam2ego, and the camera stamp minus the LiDAR stamp (microseconds).
_CAMERAS = {
    "CAM_FRONT": (
        [[1266.417203046554, 0.0, 816.2670197447984], [0.0, 1266.417203046554, 491.50706579294757],
         [0.0, 0.0, 1.0]],
        [[0.005684778559952974, -0.005636667832732201, 0.9999679327011108, 1.7007912397384644],
         [-0.9999834895133972, -0.0008371152798645198, 0.0056801484897732735, 0.01594563201069832],
         [0.000805071322247386, -0.9999837875366211, -0.005641333758831024, 1.5109575986862183],
         [0.0, 0.0, 0.0, 1.0]],
        -35491),
    "CAM_FRONT_RIGHT": (
        [[1260.8474446004698, 0.0, 807.968244525554], [0.0, 1260.8474446004698, 495.3344268742088],
         [0.0, 0.0, 1.0]],
        [[-0.8329295516014099, -9.94603760773316e-06, 0.5533789992332458, 1.5508477687835693],
         [-0.55330491065979, 0.016378816217184067, -0.8328177332878113, -0.4934048056602478],
         [-0.009055409580469131, -0.9998658299446106, -0.013647902756929398, 1.4957480430603027],
         [0.0, 0.0, 0.0, 1.0]],
        -27612),
    "CAM_FRONT_LEFT": (
        [[1272.5979470598488, 0.0, 826.6154927353808], [0.0, 1272.5979470598488, 479.75165386361925],
         [0.0, 0.0, 1.0]],
        [[0.8207583427429199, -0.00034143668017350137, 0.5712754130363464, 1.5238779783248901],
         [-0.5712715983390808, 0.0032195018138736486, 0.8207547664642334, 0.4946313500404358],
         [-0.002119458047673106, -0.9999947547912598, 0.0024473799858242273, 1.5093282461166382],
         [0.0, 0.0, 0.0, 1.0]],
        -43107),
    "CAM_BACK": (
        [[809.2209905677063, 0.0, 829.2196003259838], [0.0, 809.2209905677063, 481.77842384512485],
         [0.0, 0.0, 1.0]],
        [[0.002421709941700101, -0.016753608360886574, -0.99985671043396, 0.02832603082060814],
         [0.9999890923500061, -0.0039591072127223015, 0.0024883693549782038, 0.0034513676073402166],
         [-0.004000229295343161, -0.9998518228530884, 0.016743836924433708, 1.5791034698486328],
         [0.0, 0.0, 0.0, 1.0]],
        -10426),
    "CAM_BACK_LEFT": (
        [[1256.7414812095406, 0.0, 792.1125740759628], [0.0, 1256.7414812095406, 492.7757465151356],
         [0.0, 0.0, 1.0]],
        [[0.9477603435516357, 0.008665721863508224, -0.31886550784111023, 1.0356910228729248],
         [0.31896114349365234, -0.01397630013525486, 0.947664737701416, 0.4847950339317322],
         [0.0037556388415396214, -0.9998647570610046, -0.016010211780667305, 1.5909701585769653],
         [0.0, 0.0, 0.0, 1.0]],
        -528),
    "CAM_BACK_RIGHT": (
        [[1259.5137405846733, 0.0, 807.2529053838625], [0.0, 1259.5137405846733, 501.19579884916527],
         [0.0, 0.0, 1.0]],
        [[-0.9347755312919617, 0.015875838696956635, -0.35488399863243103, 1.0148781538009644],
         [0.35507455468177795, 0.011370494961738586, -0.9347688555717468, -0.4805682301521301],
         [-0.010805031284689903, -0.9998093247413635, -0.01626596786081791, 1.562395453453064],
         [0.0, 0.0, 0.0, 1.0]],
        -20058),
}


@dataclass(frozen=True)
class Sensor:
    """One sensor of the rig: pose on the car (T_ego_sensor, orthonormal), intrinsics for cameras."""

    channel: str
    modality: str                     # "camera" | "lidar"
    translation: np.ndarray           # (3,) in the ego frame
    rotation: np.ndarray              # (4,) quaternion w, x, y, z
    intrinsic: np.ndarray | None      # 3x3 for cameras
    time_offset_us: int = 0           # camera stamp minus LiDAR keyframe stamp, as in the real rig

    @property
    def T_ego_sensor(self) -> np.ndarray:  # noqa: N802 - project naming T_a_b
        return make_transform(self.rotation, self.translation)

    @property
    def width(self) -> int:
        return IMAGE_WIDTH

    @property
    def height(self) -> int:
        return IMAGE_HEIGHT


@dataclass(frozen=True)
class Rig:
    lidar: Sensor
    cameras: tuple[Sensor, ...]       # in CAMERA_NAMES order
    source: str                       # where the numbers came from

    def camera(self, channel: str) -> Sensor:
        for cam in self.cameras:
            if cam.channel == channel:
                return cam
        raise KeyError(channel)

    @property
    def sensors(self) -> tuple[Sensor, ...]:
        return (*self.cameras, self.lidar)


def _sensor(channel: str, modality: str, transform, intrinsic=None, offset_us: int = 0) -> Sensor:
    transform = np.asarray(transform, dtype=np.float64)
    return Sensor(channel=channel, modality=modality, translation=transform[:3, 3].copy(),
                  rotation=matrix_to_quat_wxyz(transform[:3, :3]),
                  intrinsic=None if intrinsic is None else np.asarray(intrinsic, dtype=np.float64),
                  time_offset_us=int(offset_us))


def embedded_rig() -> Rig:
    """The rig from the numbers embedded in this module."""
    cams = tuple(_sensor(name, "camera", _CAMERAS[name][1], _CAMERAS[name][0], _CAMERAS[name][2])
                 for name in CAMERA_NAMES)
    return Rig(lidar=_sensor(LIDAR_NAME, "lidar", _LIDAR2EGO), cameras=cams, source="embedded")


def rig_from_sample_json(path: Path) -> Rig:
    """The rig from a real nuScenes ``sample.json`` (cam2img, cam2ego, lidar2ego, stamps)."""
    data = json.loads(Path(path).read_text())
    lidar_stamp = float(data["lidar"].get("timestamp_s", data["timestamp_s"]))
    cams = []
    for name in CAMERA_NAMES:
        cam = data["cameras"][name]
        offset = int(round((float(cam["timestamp_s"]) - lidar_stamp) * 1e6))
        cams.append(_sensor(name, "camera", cam["cam2ego"], cam["cam2img"], offset))
    return Rig(lidar=_sensor(LIDAR_NAME, "lidar", data["lidar"]["lidar2ego"]), cameras=tuple(cams),
               source=str(path))


def load_rig(sample_json: Path | None = None) -> Rig:
    """The real nuScenes rig: from ``sample_json`` (default: the shared real sample) if it exists, else the
    embedded copy of the same numbers."""
    if sample_json is None:
        from bevfusion_ros.paths import nuscenes_sample_dir
        sample_json = nuscenes_sample_dir() / "sample.json"
    if Path(sample_json).is_file():
        return rig_from_sample_json(Path(sample_json))
    return embedded_rig()
