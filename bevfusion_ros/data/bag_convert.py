"""`bevfusion-ros convert`: one nuScenes scene -> a rosbag2 bag (MCAP by default, sqlite3 on request).

    bevfusion-ros convert --dataroot D --version v1.0-mini --scene scene-0061 --out BAG [--storage mcap|sqlite3]

Topics (ARCHITECTURE.md §3), all stamped with the nuScenes timestamps (bag time = header stamp):

- ``/LIDAR_TOP`` PointCloud2 of every LiDAR sweep (keyframes and sweeps), x,y,z,intensity float32 + ring uint16
- ``/CAM_*/image_rect_compressed`` CompressedImage with the dataset's JPEG bytes as they are, and
  ``/CAM_*/camera_info`` beside each image
- ``/tf_static``: base_link -> each sensor (calibrated_sensor), once, at the scene's first stamp
- ``/tf``: map -> base_link (ego_pose) at every sample_data stamp
- ``/gt/detections`` (bevfusion_msgs/DetectedObjects3D) and ``/gt/markers`` (MarkerArray) at each keyframe's
  LiDAR stamp, boxes in the LIDAR_TOP frame

Works on the real dataset layout and on the synthetic one (same schema, read with the devkit).
Wrong path, missing/corrupt tables, unknown scene, a missing or corrupt sensor file and an existing
output path are :class:`UserError`s: one line, exit status 2, and no half-written bag left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bevfusion_ros import classes, geometry
from bevfusion_ros.errors import UserError

SENSOR_CHANNELS: tuple[str, ...] = (classes.LIDAR_NAME, *classes.CAMERA_NAMES)
STORAGES = ("mcap", "sqlite3")


@dataclass
class ConvertStats:
    out: Path
    messages: dict[str, int] = field(default_factory=dict)   # topic -> count
    start_us: int = 0
    end_us: int = 0

    @property
    def total(self) -> int:
        return sum(self.messages.values())


# ----------------------------------------------------------------------------- dataset access


def open_dataset(dataroot: str | Path, version: str | None = None):
    """The devkit's NuScenes for ``dataroot``/``version`` (inferred when None); every failure (wrong path,
    unknown version, missing or corrupt table, inconsistent tables) becomes one UserError."""
    from bevfusion_ros.data import nuscenes_io

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return nuscenes_io.open_nuscenes(dataroot, version)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - the devkit raises bare errors on inconsistent tables
        raise UserError(f"dataset {str(dataroot)!r} ({version}) could not be loaded: {type(err).__name__}: {err}"
                        ) from None


def find_scene(nusc, name: str) -> dict:
    """The scene record named ``name``; UserError listing known scene names otherwise."""
    from bevfusion_ros.data import nuscenes_io

    return nuscenes_io.find_scene(nusc, name)


def load_points(path: Path) -> np.ndarray:
    """A nuScenes ``.pcd.bin``: float32 [N, 5] (x, y, z, intensity, ring); UserError if missing or corrupt."""
    from bevfusion_ros.data import nuscenes_io

    return nuscenes_io.load_points(path)


def load_jpeg(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(f"image file {str(path)!r} is missing")
    data = path.read_bytes()
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise UserError(f"image file {str(path)!r} is corrupt: not a JPEG")
    return data


def scene_sample_data(nusc, scene: dict, channels: tuple[str, ...], keyframes_only: bool = False) -> list[dict]:
    """Every sample_data record of ``scene`` for ``channels`` (sweeps included unless keyframes_only), per
    channel in time order, channels in the order given."""
    first = nusc.get("sample", scene["first_sample_token"])
    records = []
    for channel in channels:
        if channel not in first["data"]:
            continue
        token = first["data"][channel]
        # sweeps recorded before the first keyframe still belong to the scene (their sample is the first one)
        while True:
            previous = nusc.get("sample_data", token)["prev"]
            if not previous or nusc.get("sample", nusc.get("sample_data", previous)["sample_token"])[
                    "scene_token"] != scene["token"]:
                break
            token = previous
        while token:
            record = nusc.get("sample_data", token)
            if nusc.get("sample", record["sample_token"])["scene_token"] != scene["token"]:
                break
            if record["is_key_frame"] or not keyframes_only:
                records.append(record)
            token = record["next"]
    return records


def keyframe_boxes(nusc, sample: dict, lidar_record: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """Ground-truth boxes of a keyframe in its LiDAR frame: internal boxes [M, 9], labels, attributes.
    Annotations whose category is not one of the 10 detection classes are left out."""
    ego = nusc.get("ego_pose", lidar_record["ego_pose_token"])
    calib = nusc.get("calibrated_sensor", lidar_record["calibrated_sensor_token"])
    T_global_lidar = (geometry.make_transform(ego["rotation"], ego["translation"])
                      @ geometry.make_transform(calib["rotation"], calib["translation"]))
    T_lidar_global = geometry.invert_transform(T_global_lidar)
    boxes, labels, attributes = [], [], []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        label = classes.CATEGORY_TO_DETECTION.get(ann["category_name"])
        if label is None:
            continue
        velocity = nusc.box_velocity(ann_token)[:2]
        boxes.append(geometry.box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"], velocity))
        labels.append(label)
        names = [nusc.get("attribute", token)["name"] for token in ann["attribute_tokens"]]
        attributes.append(names[0] if names else "")
    if not boxes:
        return np.zeros((0, geometry.BOX_DIM)), [], []
    return geometry.transform_boxes(T_lidar_global, np.stack(boxes)), labels, attributes


# ----------------------------------------------------------------------------- conversion


def _qos_transient_local():
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                    QosTime)

    zero = QosTime(sec=0, nsec=0)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL, deadline=zero, lifespan=zero,
                liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
                avoid_ros_namespace_conventions=False)]


def _events(nusc, scene: dict, keyframes_only: bool) -> list[tuple[int, int, str, dict]]:
    """(timestamp, order, kind, record) for every message to write, time sorted."""
    events = []
    for record in scene_sample_data(nusc, scene, SENSOR_CHANNELS, keyframes_only):
        channel = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])["sensor_token"]
        channel = nusc.get("sensor", channel)["channel"]
        events.append((record["timestamp"], 0, channel, record))
    if not events:
        raise UserError(f"scene {scene['name']!r} has no sample_data for {list(SENSOR_CHANNELS)}")
    events.sort(key=lambda event: (event[0], event[1], event[2]))
    return events


def convert_scene(dataroot: str | Path, version: str | None, scene_name: str, out: str | Path, storage: str = "mcap",
                  keyframes_only: bool = False, progress: bool = True) -> ConvertStats:
    """Write scene ``scene_name`` of the dataset to a new rosbag2 at ``out``; returns per-topic counts."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from bevfusion_ros.data import bag_messages as bm
    from bevfusion_ros.ros.types import typestore

    out = Path(out)
    if out.exists():
        raise UserError(f"output {str(out)!r} already exists; choose a new path or remove it")
    if not out.parent.is_dir():
        raise UserError(f"output folder {str(out.parent)!r} does not exist")
    if storage not in STORAGES:
        raise UserError(f"unknown storage {storage!r} (choose {' or '.join(STORAGES)})")
    nusc = open_dataset(dataroot, version)
    scene = find_scene(nusc, scene_name)
    events = _events(nusc, scene, keyframes_only)
    dataroot = Path(dataroot)
    store = typestore()
    stats = ConvertStats(out=out, start_us=events[0][0], end_us=events[-1][0])

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=9, storage_plugin=plugin)
    connections: dict[str, Any] = {}

    def write(topic: str, stamp_us: int, typed: tuple[str, Any]) -> None:
        type_name, msg = typed
        if topic not in connections:
            qos = _qos_transient_local() if topic == bm.TF_STATIC_TOPIC else ()
            connections[topic] = writer.add_connection(topic, type_name, typestore=store, offered_qos_profiles=qos)
        writer.write(connections[topic], int(stamp_us) * 1000, store.serialize_cdr(msg, type_name))
        stats.messages[topic] = stats.messages.get(topic, 0) + 1

    try:
        writer.open()
        # /tf_static: base_link -> every sensor, from the first record of each channel
        static, seen = [], set()
        for _stamp, _order, channel, record in events:
            if channel in seen:
                continue
            seen.add(channel)
            calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            static.append(bm.transform_stamped(bm.BASE_FRAME, channel, events[0][0], calib["translation"],
                                               calib["rotation"]))
        write(bm.TF_STATIC_TOPIC, events[0][0], bm.tf_message(static))

        from tqdm import tqdm

        last_tf_stamp = None
        for stamp, _order, channel, record in tqdm(events, desc=f"convert {scene_name}", unit="msg",
                                                   disable=not progress, leave=False):
            if stamp != last_tf_stamp:
                ego = nusc.get("ego_pose", record["ego_pose_token"])
                write(bm.TF_TOPIC, stamp, bm.tf_message([bm.transform_stamped(
                    bm.MAP_FRAME, bm.BASE_FRAME, stamp,
                    ego["translation"], ego["rotation"])]))
                last_tf_stamp = stamp
            path = dataroot / record["filename"]
            if channel == classes.LIDAR_NAME:
                write(bm.LIDAR_TOPIC, stamp, bm.pointcloud_message(load_points(path), stamp, channel))
                if record["is_key_frame"]:
                    sample = nusc.get("sample", record["sample_token"])
                    boxes, labels, attributes = keyframe_boxes(nusc, sample, record)
                    write(bm.GT_DETECTIONS_TOPIC, stamp, bm.detected_objects_message(boxes, labels, attributes, stamp))
                    write(bm.GT_MARKERS_TOPIC, stamp, bm.box_markers_message(boxes, labels, stamp))
            else:
                calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
                if not calib.get("camera_intrinsic"):
                    raise UserError(f"calibrated_sensor of {channel} has no camera_intrinsic")
                write(bm.camera_image_topic(channel), stamp, bm.compressed_image_message(load_jpeg(path), stamp, channel))
                write(bm.camera_info_topic(channel), stamp, bm.camera_info_message(
                    np.asarray(calib["camera_intrinsic"]), record["width"] or 1600, record["height"] or 900,
                    stamp, channel))
        writer.close()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return stats


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes root (holds the version folder, samples/, sweeps/)")
    parser.add_argument("--version", default=None,
                        help="table folder, e.g. v1.0-mini, v1.0-trainval (default: the one in --dataroot)")
    parser.add_argument("--scene", required=True, help="scene name, e.g. scene-0061")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage plug-in")
    parser.add_argument("--keyframes-only", action="store_true", help="write keyframes only (2 Hz), no sweeps")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    stats = convert_scene(args.dataroot, args.version, args.scene, args.out, storage=args.storage,
                          keyframes_only=args.keyframes_only, progress=not args.quiet)
    seconds = (stats.end_us - stats.start_us) / 1e6
    print(f"wrote {stats.out} ({args.storage}) from {args.scene}: {stats.total} messages over {seconds:.1f} s")
    for topic in sorted(stats.messages):
        print(f"  {topic:40s} {stats.messages[topic]}")
    return 0
