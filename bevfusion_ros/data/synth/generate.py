"""Orchestration: splits -> scenes -> sensor timeline -> files and tables.

Timeline of a scene with K keyframes (2 Hz): LiDAR sweeps at 20 Hz from the first keyframe to the last
(every 10th is the keyframe), camera frames at `camera_hz` (a multiple of 2 Hz; nuScenes: 12 Hz) with
each camera's keyframe image taken at the LiDAR keyframe stamp plus the real rig's per-camera offset
(-43..-0.5 ms). Annotations are at the LiDAR keyframe stamps.
"""
from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros.data.synth.lidar import LidarModel
from bevfusion_ros.data.synth.maps import write_maps
from bevfusion_ros.data.synth.rig import Rig, load_rig
from bevfusion_ros.data.synth.scene import LIDAR_HZ, SceneGenerator, _NoProgress
from bevfusion_ros.data.synth.world import LOCATIONS, city_for
from bevfusion_ros.data.synth.writer import TableWriter
from bevfusion_ros.errors import UserError

SPLITS = ("train", "val", "mini_train", "mini_val")


@dataclass
class SynthConfig:
    out: Path
    splits: list[tuple[str, int]]             # (split, number of scenes)
    seed: int = 0
    keyframes: int = 40
    camera_hz: int = 12
    jpeg_quality: int = 90
    semantic: bool = True                     # lidarseg labels + camera semantic masks
    location: str | None = None               # force one map location
    rig_json: Path | None = None
    lidar: LidarModel = field(default_factory=LidarModel)
    progress: bool = True
    workers: int = 1                          # scenes generated in parallel processes


def version_for(splits: list[tuple[str, int]]) -> str:
    kinds = {"v1.0-mini" if s.startswith("mini") else "v1.0-trainval" for s, _ in splits}
    if len(kinds) != 1:
        raise UserError("splits mix mini_* and train/val; one dataset has one version (v1.0-mini or v1.0-trainval)")
    return kinds.pop()


def scene_names(splits: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """(split, scene name) pairs: the first n names of each real devkit split."""
    from nuscenes.utils.splits import create_splits_scenes
    real = create_splits_scenes()
    out: list[tuple[str, str]] = []
    for split, count in splits:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        names = real[split]
        if count < 1 or count > len(names):
            raise UserError(f"split {split} has {len(names)} scene names; asked for {count} scenes")
        out.extend((split, name) for name in names[:count])
    seen = [name for _, name in out]
    if len(set(seen)) != len(seen):
        raise UserError("the requested splits share scene names (e.g. mini_val is part of val); pick disjoint splits")
    return out


def scene_seed(seed: int, name: str) -> int:
    """Per-scene seed: from the dataset seed and the scene name, so train and evaluation scenes (disjoint
    names) never share a seed."""
    return int(hashlib.sha256(f"bevfusion-synth/{seed}/{name}".encode()).hexdigest()[:15], 16)


def prepare_out_dir(out: Path) -> None:
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            raise UserError(f"--out {out} exists and is not empty; give a new or empty directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to --out {out}: {err.strerror or err}") from None


def generate(config: SynthConfig) -> dict:
    """Generate the dataset; returns a summary dict."""
    if config.keyframes < 2:
        raise UserError(f"--keyframes must be >= 2, got {config.keyframes}")
    if config.camera_hz < 2 or config.camera_hz % 2 or config.camera_hz > 20:
        raise UserError(f"--camera-hz must be an even number in 2..20 (a multiple of the 2 Hz keyframe rate), "
                        f"got {config.camera_hz}")
    if config.location is not None and config.location not in LOCATIONS:
        raise UserError(f"unknown --location {config.location!r}; expected one of {', '.join(LOCATIONS)}")
    version = version_for(config.splits)
    names = scene_names(config.splits)
    prepare_out_dir(config.out)
    root = Path(config.out)
    rig = load_rig(config.rig_json)
    writer = TableWriter(version, f"synth/{config.seed}")
    frames_per_scene = (config.keyframes - 1) * (LIDAR_HZ // 2) + 1 + \
        len(rig.cameras) * ((config.keyframes - 1) * (config.camera_hz // 2) + 1)
    jobs = []
    written_maps: dict[str, str] = {}
    for split, name in names:
        seed = scene_seed(config.seed, name)
        location = config.location or LOCATIONS[int(np.random.default_rng(seed).integers(len(LOCATIONS)))]
        if location not in written_maps:
            written_maps[location] = write_maps(root, city_for(location))
        jobs.append(_SceneJob(config, rig, version, root, split, name, seed, location, written_maps[location]))
    summary = {"version": version, "scenes": [], "points_per_sweep": [], "annotations_per_sample": []}
    progress = _progress(len(names) * frames_per_scene, config.progress)
    parallel = config.workers > 1 and len(jobs) > 1
    try:
        if not parallel:
            results = (_run_scene(job, progress) for job in jobs)
        else:
            pool = ProcessPoolExecutor(max_workers=min(config.workers, len(jobs)),
                                       mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
            results = pool.map(_run_scene, jobs)
        for job, (scene_writer, stats) in zip(jobs, results):
            writer.merge(scene_writer)
            summary["scenes"].append({"name": job.name, "split": job.split, "location": job.location})
            summary["points_per_sweep"].extend(stats["points_per_sweep"])
            summary["annotations_per_sample"].extend(stats["annotations_per_sample"])
            if parallel:
                progress.update(frames_per_scene)
    finally:
        progress.close()
        if parallel:
            pool.shutdown(cancel_futures=True)
    writer.write(root)
    return summary


@dataclass
class _SceneJob:
    config: SynthConfig
    rig: Rig
    version: str
    root: Path
    split: str
    name: str
    seed: int
    location: str
    map_png: str


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _run_scene(job: _SceneJob, progress=None) -> tuple[TableWriter, dict]:
    """Generate one scene into its own table writer (runs in a worker process when --workers > 1)."""
    writer = TableWriter(job.version, f"synth/{job.config.seed}")
    stats = SceneGenerator(job.config, job.rig, writer, job.root, job.name, job.seed, job.location, job.map_png,
                           progress or _NoProgress()).run()
    return writer, stats


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(total=total, unit="frame", desc="synth", dynamic_ncols=True)


