"""Model latency (voxelize -> detections) of the tiny config on CPU with 2 threads, per back-end, and peak
memory. Input: the real nuScenes keyframe in ../shared/data (six 1600x900 JPEGs + its LIDAR_TOP sweep with
dt = 0, i.e. a single sweep) when present, else a random frame. Weights: the shipped checkpoint when
present (random otherwise: latency does not depend on the values).

Keys: latency_ms_p50_torch, latency_ms_p50_onnxruntime ("not available" when that back-end is missing),
per-stage medians, peak_mem_mb (ru_maxrss growth over the run). Latency ends when the detections exist
(``timings_ms["detections"]``: the pipeline hands them over then, the node publishes them then); with
``parallel_branches`` the map head may still be running, ``latency_ms_p50_torch_parallel_with_map`` waits
for it too.
"""
from __future__ import annotations

import json
import resource
import statistics
import time

import numpy as np
import torch

from bevfusion_ros.paths import REPO_ROOT, nuscenes_sample_dir

CONFIG = REPO_ROOT / "models" / "bevfusion-tiny.yaml"
CHECKPOINT = REPO_ROOT / "models" / "bevfusion-tiny-synthetic.pt"
WARMUP, RUNS = 3, 20


def _real_frame():
    import cv2

    from bevfusion_ros.classes import CAMERA_NAMES
    from bevfusion_ros.frame import CameraInput, Frame
    from bevfusion_ros.geometry import invert_transform
    folder = nuscenes_sample_dir()
    meta = json.loads((folder / "sample.json").read_text())
    pts = np.fromfile(folder / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5).copy()
    pts[:, 4] = 0.0
    cams = []
    for name in CAMERA_NAMES:
        cam = meta["cameras"][name]
        image = cv2.imread(str(folder / cam["file"]))[:, :, ::-1].copy()
        T_lidar_cam = invert_transform(np.asarray(cam["lidar2cam"]))
        cams.append(CameraInput(name, image, np.asarray(cam["cam2img"])[:3, :3], T_lidar_cam))
    return Frame(stamp_us=0, points=pts, cameras=cams), "real nuScenes keyframe (1 sweep)"


def _random_frame():
    from bevfusion_ros.classes import CAMERA_NAMES
    from bevfusion_ros.frame import CameraInput, Frame
    rng = np.random.default_rng(0)
    pts = np.zeros((60000, 5), np.float32)
    pts[:, :2] = rng.uniform(-50, 50, (60000, 2))
    pts[:, 2] = rng.uniform(-2, 2, 60000)
    cams = []
    for i, name in enumerate(CAMERA_NAMES):
        a = np.deg2rad([0, -55, 55, 180, 110, -110][i])
        T = np.eye(4)
        T[:3, :3] = np.stack([[np.sin(a), -np.cos(a), 0], [0, 0, -1], [np.cos(a), np.sin(a), 0]], 1)
        K = np.array([[1260.0, 0, 800], [0, 1260, 450], [0, 0, 1]])
        cams.append(CameraInput(name, rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8), K, T))
    return Frame(stamp_us=0, points=pts, cameras=cams), "random frame (60k points)"


def _measure(pipeline, frame) -> dict:
    for _ in range(WARMUP):
        pipeline.infer(frame)
    totals, with_map, stages = [], [], {}
    for _ in range(RUNS):
        result = pipeline.infer(frame)
        timings = result.timings_ms
        # until the detections exist (the map head may still be running beside their post-processing)
        totals.append(timings.get("detections", timings["total"]) - timings.get("preprocess", 0.0))
        with_map.append(timings["total"] - timings.get("preprocess", 0.0))
        for key, value in timings.items():
            stages.setdefault(key, []).append(value)
    return {"p50": statistics.median(totals), "p90": float(np.percentile(totals, 90)),
            "p50_with_map": statistics.median(with_map),
            "stages": {k: round(statistics.median(v), 2) for k, v in stages.items()},
            "detections": len(result.detections)}


def run() -> dict:
    from bevfusion_ros.runtime.pipeline import PerceptionPipeline
    torch.set_num_threads(2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        frame, source = _real_frame()
    except (OSError, KeyError, TypeError, AttributeError):
        frame, source = _random_frame()
    checkpoint = CHECKPOINT if CHECKPOINT.is_file() else None
    result: dict = {"config": CONFIG.name, "threads": 2, "input": source, "runs": RUNS,
                    "checkpoint": checkpoint.name if checkpoint else "random weights",
                    "latency_definition": "voxelize -> detections (PerceptionPipeline's timings_ms['detections'] "
                                          "minus image preprocessing; *_with_map: until the map is done too)"}
    started = time.perf_counter()
    torch_run = _measure(PerceptionPipeline(CONFIG, checkpoint, backend="torch"), frame)
    result["latency_ms_p50_torch"] = round(torch_run["p50"], 2)
    result["latency_ms_p90_torch"] = round(torch_run["p90"], 2)
    result["stages_ms_torch"] = torch_run["stages"]
    try:
        ort = _measure(PerceptionPipeline(CONFIG, checkpoint, backend="onnxruntime"), frame)
        result["latency_ms_p50_onnxruntime"] = round(ort["p50"], 2)
        result["stages_ms_onnxruntime"] = ort["stages"]
    except Exception as err:  # noqa: BLE001 - report, never fail the benchmark run
        result["latency_ms_p50_onnxruntime"] = "not available"
        result["onnxruntime_error"] = f"{type(err).__name__}: {err}"[:300]
    # the same with 1 thread: on a shared, oversubscribed machine OpenMP's spin-waiting makes 2 threads
    # slower than 1; both are reported so the effect of the load is visible
    torch.set_num_threads(1)
    one = _measure(PerceptionPipeline(CONFIG, checkpoint, backend="torch"), frame)
    result["latency_ms_p50_torch_1thread"] = round(one["p50"], 2)
    result["stages_ms_torch_1thread"] = one["stages"]
    # peak memory of the three pipelines above (as in earlier runs), before two more are loaded
    result["peak_mem_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0, 1)
    # 2 threads the other way: 1 intra-op thread, and the camera side (camera preprocessing, encoder,
    # bev_pool, map raster) on a second thread beside the LiDAR branch (parallel_branches, the node's
    # configuration). Image preprocessing still is not counted, except where it delays the LiDAR thread.
    parallel = _measure(PerceptionPipeline(CONFIG, checkpoint, backend="torch", parallel_branches=True), frame)
    result["latency_ms_p50_torch_parallel"] = round(parallel["p50"], 2)
    result["latency_ms_p50_torch_parallel_with_map"] = round(parallel["p50_with_map"], 2)
    try:
        result["latency_ms_p50_onnxruntime_parallel"] = round(_measure(PerceptionPipeline(
            CONFIG, checkpoint, backend="onnxruntime", parallel_branches=True, intra_op_threads=1),
            frame)["p50"], 2)
    except Exception as err:  # noqa: BLE001 - report, never fail the benchmark run
        result["latency_ms_p50_onnxruntime_parallel"] = "not available"
        result["onnxruntime_error"] = f"{type(err).__name__}: {err}"[:300]
    torch.set_num_threads(2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["load_average_1min"] = round(__import__("os").getloadavg()[0], 2)
    return result


def markdown(result: dict) -> str:
    lines = [f"Tiny config ({result['config']}), CPU, {result['threads']} threads, {result['input']}, "
             f"{result['checkpoint']}; median of {result['runs']} runs; 1-min load average during the run "
             f"{result.get('load_average_1min')} on this shared machine.", "",
             "| back-end | p50 latency (ms) |", "|---|---|",
             f"| torch | {result['latency_ms_p50_torch']} |",
             f"| onnxruntime | {result['latency_ms_p50_onnxruntime']} |",
             f"| torch, 1 thread | {result.get('latency_ms_p50_torch_1thread')} |",
             f"| torch, 1 intra-op thread + camera-branch thread | "
             f"{result.get('latency_ms_p50_torch_parallel')} (map done: "
             f"{result.get('latency_ms_p50_torch_parallel_with_map')}) |",
             f"| onnxruntime, 1 intra-op thread + camera-branch thread | "
             f"{result.get('latency_ms_p50_onnxruntime_parallel')} |", "",
             f"Peak memory (ru_maxrss growth): {result['peak_mem_mb']} MB.", "",
             "| stage (torch) | median ms |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["stages_ms_torch"].items()]
    return "\n".join(lines)
