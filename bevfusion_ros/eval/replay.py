"""`bevfusion-ros replay-eval`: evaluate the running node graph on rosbag replays of nuScenes scenes.

    bevfusion-ros replay-eval --dataroot D --version V [--scenes S ...] [--rate R] [--out DIR] [--bags DIR]
                              [--backend torch|onnxruntime|tensorrt] [--checkpoint C] [--eval-set E]

For each scene: convert it to a bag (or reuse ``--bags DIR/<scene>``), start the perception graph from the
same description as the launch file (:mod:`bevfusion_ros.launch_graph`, one process per node), play the
bag in real time (or at ``--rate``) with the project's player, and record what the node publishes:
``~/detections`` (DetectedObjects3D), ``~/map/<class>`` (OccupancyGrid) and ``~/frame_status`` (one JSON
line per LiDAR sweep: processed with its latency and masked cameras, or dropped / rejected with the
reason). Outputs are matched to keyframes by LiDAR stamp, moved to the global frame with the keyframe's
ego pose and written as a nuScenes submission; the devkit's DetectionEval and the BEVFusion map IoU score
them. Every keyframe is accounted for: evaluated, or listed in ``dropped`` with the reason.

Detection is scored three ways, because a real-time node on a slow machine skips sweeps and a keyframe
whose sweep was skipped has no output of its own:

- ``map`` / ``nds``: every keyframe, with the output of its own sweep or nothing (the strict score; it
  mixes accuracy with how many keyframes the node kept up with).
- ``detection_evaluated_keyframes``: only the keyframes with their own output (the accuracy of what the
  node produced; comparable with an offline ``eval`` of the same frames, and scored like the map IoU).
- ``detection_latest_output``: every keyframe, with the node's newest output at or before it (at most
  ``LATEST_OUTPUT_MAX_AGE_S`` old), its boxes moved along their velocities to the keyframe's time: what a
  planner holding the last message sees.

Writes ``DIR/report.json`` (keys: map, nds, mapseg_miou, latency_ms {p50,p90,p99}, keyframes_total,
keyframes_evaluated, dropped [{sample_token, reason}], masked_camera_frames, backend, rate, ...),
``DIR/report.md``, ``DIR/submission.json`` and PNGs (BEV GT vs predictions, a camera image with projected
boxes, the latency histogram).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from bevfusion_ros.classes import LIDAR_NAME, MAP_CLASSES
from bevfusion_ros.errors import UserError
from bevfusion_ros.eval.replay_run import (NODE, Recorder, SceneRecord, play_lockstep, replay_scene,  # noqa: F401
                                           rss_mb, soak, write_params)


# ----------------------------------------------------------------------------- evaluation


def grids_to_probs(grids: dict[str, tuple]) -> tuple[np.ndarray, float, float, float] | None:
    """Recorded OccupancyGrids (one per map class) -> (probs [C, X, Y], resolution, x_min, y_min)."""
    if any(name not in grids for name in MAP_CLASSES):
        return None
    first = grids[MAP_CLASSES[0]]
    probs = np.stack([grids[name][0].T.astype(np.float32) / 100.0 for name in MAP_CLASSES])
    return np.clip(probs, 0.0, 1.0), first[1], first[2], first[3]


@dataclass
class KeyframeResult:
    sample_token: str
    scene: str
    stamp_us: int
    status: str                      # evaluated | dropped
    reason: str = ""


def account_keyframes(nusc, scene_name: str, record: SceneRecord) -> list[KeyframeResult]:
    from bevfusion_ros.data.bag_convert import find_scene

    scene = find_scene(nusc, scene_name)
    out = []
    token = scene["first_sample_token"]
    while token:
        sample = nusc.get("sample", token)
        stamp = nusc.get("sample_data", sample["data"][LIDAR_NAME])["timestamp"]
        status = record.statuses.get(stamp)
        if status is None:
            result = KeyframeResult(token, scene_name, stamp, "dropped", "no frame_status received from the node")
        elif status["status"] != "processed":
            result = KeyframeResult(token, scene_name, stamp, "dropped",
                                    f"{status['status']}: {status.get('reason', 'unknown')}")
        elif stamp not in record.detections:
            result = KeyframeResult(token, scene_name, stamp, "dropped", "processed but detections not received")
        else:
            result = KeyframeResult(token, scene_name, stamp, "evaluated")
        out.append(result)
        token = sample["next"]
    return out


# A consumer of the node holds its last output until a newer one arrives; how old it may be at a keyframe
# and still count (10 sweeps at 20 Hz: long enough for the node's real-time pace on 2 cores, short enough
# that a stalled node scores nothing).
LATEST_OUTPUT_MAX_AGE_S = 0.5


def latest_output_stamp(output_stamps: list[int], stamp_us: int, max_age_s: float) -> int | None:
    """The newest of the sorted ``output_stamps`` at or before ``stamp_us``, at most ``max_age_s`` older."""
    import bisect
    i = bisect.bisect_right(output_stamps, stamp_us)
    if i == 0 or (stamp_us - output_stamps[i - 1]) * 1e-6 > max_age_s:
        return None
    return output_stamps[i - 1]


def extrapolate(detections, dt_s: float):
    """Boxes moved along their own velocity by ``dt_s`` (LiDAR frame; non-finite velocities leave a box
    in place): what a consumer predicts from an output ``dt_s`` old."""
    from bevfusion_ros.frame import Detections
    boxes = np.array(detections.boxes, dtype=np.float32, copy=True).reshape(-1, 9)
    if dt_s:
        boxes[:, :2] += np.nan_to_num(boxes[:, 7:9], nan=0.0, posinf=0.0, neginf=0.0) * np.float32(dt_s)
    return Detections(boxes, detections.scores, detections.labels, detections.attributes)


def latest_outputs(nusc, scene_name: str, record: SceneRecord, max_age_s: float = LATEST_OUTPUT_MAX_AGE_S
                   ) -> dict[str, tuple[object, np.ndarray, float]]:
    """For each keyframe of the scene: (detections, T_global_lidar of their sweep, age s) of the newest
    output at or before it, moved along the boxes' velocities to the keyframe's time; keyframes with no
    output within ``max_age_s`` are absent. A keyframe with its own output gets it, age 0."""
    from bevfusion_ros.data.bag_convert import find_scene, scene_sample_data
    from bevfusion_ros.eval.detection import sample_data_to_global

    scene = find_scene(nusc, scene_name)
    sweeps = scene_sample_data(nusc, scene, (LIDAR_NAME,))
    token_of = {r["timestamp"]: r["token"] for r in sweeps}
    stamps = sorted(t for t in record.detections if t in token_of)
    out = {}
    for sweep in sweeps:
        if not sweep["is_key_frame"]:
            continue
        source = latest_output_stamp(stamps, sweep["timestamp"], max_age_s)
        if source is None:
            continue
        age = (sweep["timestamp"] - source) * 1e-6
        out[sweep["sample_token"]] = (extrapolate(record.detections[source], age),
                                      sample_data_to_global(nusc, token_of[source]), age)
    return out


def scene_lidar_stamps(nusc, scene_name: str) -> tuple[list[int], set[int]]:
    """(every LIDAR_TOP sweep stamp of the scene, the keyframe stamps)."""
    from bevfusion_ros.data.bag_convert import find_scene, scene_sample_data

    scene = find_scene(nusc, scene_name)
    records = scene_sample_data(nusc, scene, (LIDAR_NAME,))
    stamps = [r["timestamp"] for r in records]
    return stamps, {r["timestamp"] for r in records if r["is_key_frame"]}


def default_scenes(nusc, eval_set: str) -> list[str]:
    from bevfusion_ros.eval.detection import split_scene_names

    names = set(split_scene_names(nusc, eval_set))
    return [scene["name"] for scene in nusc.scene if scene["name"] in names]


def isolate_ros_graph() -> None:
    """Environment for the graph, player and recorder this evaluation starts (inherited by the child
    processes): the graph's DDS transports, discovery on this host only, and a ROS domain of its own, so
    another graph on the machine (a developer's, a test's) cannot publish into the evaluation or read from
    it. Values the user has set win (set ROS_DOMAIN_ID to watch an evaluation in RViz)."""
    import random

    from bevfusion_ros.launch_graph import use_node_environment

    use_node_environment()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))


def pace_label(rate) -> str:
    return "in lockstep" if rate == "lockstep" else f"at {float(rate):g}x"


def _figures(nusc, out_dir: Path, evaluated: list[KeyframeResult], records: dict[str, SceneRecord],
             latencies: list[float], rate: float) -> list[Path]:
    """BEV (GT vs prediction), CAM_FRONT with projected predictions, latency histogram."""
    from bevfusion_ros import geometry as geo
    from bevfusion_ros.data.bag_convert import keyframe_boxes, load_points
    from bevfusion_ros.eval import report

    images = []
    if latencies:
        images.append(report.plot_latency_histogram(
            out_dir / "latency_histogram.png", {"end-to-end (LiDAR received -> detections published)": latencies},
            title=f"perception_node latency, replay {pace_label(rate)}", budget_ms=100.0))
    if not evaluated:
        return images
    kf = evaluated[len(evaluated) // 2]
    record = records[kf.scene]
    det = record.detections[kf.stamp_us]
    sample = nusc.get("sample", kf.sample_token)
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
    points = load_points(Path(nusc.dataroot) / lidar_sd["filename"])
    gt_boxes, gt_labels, _ = keyframe_boxes(nusc, sample, lidar_sd)
    from bevfusion_ros.classes import DETECTION_CLASSES
    gt_label_ids = np.array([DETECTION_CLASSES.index(label) if isinstance(label, str) else int(label)
                             for label in gt_labels], dtype=np.int64)
    map_args = {}
    grids = grids_to_probs(record.maps.get(kf.stamp_us, {}))
    if grids is not None:
        probs, res, x_min, y_min = grids
        map_args = {"map_probs": probs, "map_bounds": (x_min, y_min, res)}
        try:
            from bevfusion_ros.eval.map_gt import sample_map_gt
            map_args["gt_map"] = sample_map_gt(nusc, kf.sample_token, [x_min, x_min + probs.shape[1] * res, res],
                                               [y_min, y_min + probs.shape[2] * res, res])
        except Exception:  # noqa: BLE001 - a dataset without maps still gets its figure
            pass
    images.append(report.plot_bev(out_dir / "bev_keyframe.png", points=points, gt_boxes=gt_boxes,
                                  gt_labels=gt_label_ids, pred_boxes=det.boxes, pred_labels=det.labels,
                                  pred_scores=det.scores, title=f"{kf.scene} keyframe {kf.stamp_us} (replay)",
                                  **map_args))
    cam_sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    cam_cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
    lidar_cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    T_ego_cam = geo.make_transform(cam_cs["rotation"], cam_cs["translation"])
    T_ego_lidar = geo.make_transform(lidar_cs["rotation"], lidar_cs["translation"])
    import cv2
    image = cv2.imread(str(Path(nusc.dataroot) / cam_sd["filename"]))
    if image is not None:
        keep = det.scores >= 0.3
        report.plot_camera_boxes(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), det.boxes[keep],
                                 np.asarray(cam_cs["camera_intrinsic"]), geo.invert_transform(T_ego_lidar) @ T_ego_cam,
                                 labels=det.labels[keep], path=out_dir / "camera_front_predictions.png")
        images.append(out_dir / "camera_front_predictions.png")
    return images


def evaluate_records(nusc, eval_set: str, scenes: list[str], records: dict[str, SceneRecord], out_dir: Path,
                     backend: str, rate: float, extra: dict | None = None) -> dict:
    """Account for every keyframe, score the submission and the maps, write the report. Returns it."""
    from bevfusion_ros.eval import report
    from bevfusion_ros.eval.detection import (build_submission, default_meta, eval_sample_tokens,
                                              evaluate_submission, sample_lidar_to_global, write_submission)
    from bevfusion_ros.eval.map_gt import MapCache, sample_map_gt
    from bevfusion_ros.eval.mapseg import MapSegAccumulator

    keyframes = [kf for scene in scenes for kf in account_keyframes(nusc, scene, records[scene])]
    evaluated = [kf for kf in keyframes if kf.status == "evaluated"]
    detections, transforms = {}, {}
    for kf in evaluated:
        detections[kf.sample_token] = records[kf.scene].detections[kf.stamp_us]
        transforms[kf.sample_token] = sample_lidar_to_global(nusc, kf.sample_token)
    tokens = eval_sample_tokens(nusc, eval_set)
    outside = sorted({kf.scene for kf in keyframes if kf.sample_token not in set(tokens)})
    if outside:
        raise UserError(f"scenes {outside} are not in eval set {eval_set!r}; pass --eval-set")
    submission = build_submission(tokens, detections, transforms, meta=default_meta("fusion"))
    submission_path = write_submission(out_dir / "submission.json", submission)
    metrics = evaluate_submission(nusc, submission_path, eval_set, out_dir / "devkit")
    # The same outputs two more ways (module docstring): only the keyframes the node produced outputs for,
    # and every keyframe with the node's newest output at that time, as a consumer holding it sees it.
    evaluated_only = evaluate_submission(nusc, submission_path, eval_set, out_dir / "devkit_evaluated_keyframes",
                                         sample_tokens=[kf.sample_token for kf in evaluated]) if evaluated else None
    latest = {token: item for scene in scenes for token, item in latest_outputs(nusc, scene, records[scene]).items()}
    latest_path = write_submission(out_dir / "submission_latest_output.json", build_submission(
        tokens, {t: v[0] for t, v in latest.items()}, {t: v[1] for t, v in latest.items()},
        meta=default_meta("fusion")))
    latest_metrics = evaluate_submission(nusc, latest_path, eval_set, out_dir / "devkit_latest_output")
    ages_ms = sorted(v[2] * 1e3 for v in latest.values())

    # map IoU over the evaluated keyframes (BEVFusion protocol, dataset-accumulated)
    acc = MapSegAccumulator()
    maps = MapCache(nusc.dataroot)
    map_error = None
    for kf in evaluated:
        grids = grids_to_probs(records[kf.scene].maps.get(kf.stamp_us, {}))
        if grids is None:
            continue
        probs, res, x_min, y_min = grids
        xbound = [x_min, x_min + probs.shape[1] * res, res]
        ybound = [y_min, y_min + probs.shape[2] * res, res]
        try:
            gt = sample_map_gt(nusc, kf.sample_token, xbound, ybound, maps=maps)
        except Exception as err:  # noqa: BLE001 - a dataset without maps still gets its detection metrics
            map_error = f"{type(err).__name__}: {err}"
            break
        acc.update(probs, gt)
    mapseg = acc.compute() if acc.frames and map_error is None else None

    statuses = [s for scene in scenes for s in records[scene].statuses.values()]
    processed = [s for s in statuses if s["status"] == "processed"]
    latencies = [s["latency_ms"]["end_to_end"] for s in processed]
    stage_latency = {stage: report.latency_stats([s["latency_ms"][stage] for s in processed])
                     for stage in ("ingest", "assemble", "model", "publish", "end_to_end")}
    drop_reasons = defaultdict(int)
    for s in statuses:
        if s["status"] != "processed":
            drop_reasons[f"{s['status']}:{s.get('reason', '')}"] += 1
    masked_reasons = defaultdict(int)
    for s in processed:
        for note in s.get("notes", []):
            if note.startswith("camera_masked:"):
                masked_reasons[note.split(":", 1)[1]] += 1
    with open(out_dir / "frame_status.jsonl", "w") as handle:
        for scene in scenes:
            for stamp in sorted(records[scene].statuses):
                handle.write(json.dumps({"scene": scene, **records[scene].statuses[stamp]}) + "\n")
    total_sweeps = sum(len(scene_lidar_stamps(nusc, scene)[0]) for scene in scenes)
    memory = [m for scene in scenes for _, m in records[scene].memory_mb]
    lat = report.latency_stats(latencies)
    result = {
        "map": metrics["map"],
        "nds": metrics["nds"],
        "mapseg_miou": None if mapseg is None else mapseg.get("miou"),
        "detection_evaluated_keyframes": {
            "map": None if evaluated_only is None else evaluated_only["map"],
            "nds": None if evaluated_only is None else evaluated_only["nds"],
            "keyframes": len(evaluated)},
        "detection_latest_output": {
            "map": latest_metrics["map"], "nds": latest_metrics["nds"], "keyframes_with_output": len(latest),
            "max_age_s": LATEST_OUTPUT_MAX_AGE_S,
            "age_ms_p50": float(np.median(ages_ms)) if ages_ms else None,
            "age_ms_max": ages_ms[-1] if ages_ms else None},
        "latency_ms": {"p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"], "mean": lat["mean"],
                       "max": lat["max"], "count": lat["count"]},
        "keyframes_total": len(keyframes),
        "keyframes_evaluated": len(evaluated),
        "dropped": [{"sample_token": kf.sample_token, "scene": kf.scene, "stamp_us": kf.stamp_us,
                     "reason": kf.reason} for kf in keyframes if kf.status != "evaluated"],
        "masked_camera_frames": sum(1 for s in processed if s.get("masked")),
        "backend": backend,
        "rate": rate,
        "eval_set": eval_set,
        "scenes": scenes,
        "frames": {"lidar_sweeps_played": total_sweeps, "processed": len(processed),
                   "dropped_or_rejected": len(statuses) - len(processed),
                   "no_status": total_sweeps - len(statuses), "drop_reasons": dict(drop_reasons)},
        "latency_by_stage_ms": stage_latency,
        "masked_camera_reasons": dict(masked_reasons),
        "per_class_ap": metrics.get("per_class_ap"),
        "tp_errors": metrics.get("tp_errors"),
        "map_present_classes": metrics.get("map_present_classes"),
        "mapseg": mapseg,
        "mapseg_error": map_error,
        "node_memory_mb": {"start": memory[0] if memory else None, "end": memory[-1] if memory else None,
                           "max": max(memory) if memory else None},
        **(extra or {}),
    }
    images = _figures(nusc, out_dir, evaluated, records, latencies, rate)
    report.write_report(out_dir, result, title=f"Replay evaluation ({backend}, {pace_label(rate)})", images=images,
                        json_name="report.json", md_name="report.md", extra_markdown=accounting_markdown(result))
    return result


def accounting_markdown(result: dict) -> str:
    """Frames, per-stage latency and every keyframe not evaluated, for report.md."""
    frames = result["frames"]
    lines = ["## Frames (every LiDAR sweep played)", "", "| | count |", "|---|---|",
             f"| sweeps played | {frames['lidar_sweeps_played']} |", f"| processed | {frames['processed']} |",
             f"| dropped or rejected by the node | {frames['dropped_or_rejected']} |",
             f"| no status received | {frames['no_status']} |",
             f"| processed with a masked camera | {result['masked_camera_frames']} |"]
    lines += [f"| {reason} | {count} |" for reason, count in sorted(frames["drop_reasons"].items())]
    lines += [f"| masked {reason} | {count} |" for reason, count in sorted(result["masked_camera_reasons"].items())]
    lines += ["", "## Latency by stage (ms, processed sweeps)", "", "| stage | p50 | p90 | p99 | max |",
              "|---|---|---|---|---|"]
    for stage, stats in result["latency_by_stage_ms"].items():
        if stats["count"]:
            lines.append(f"| {stage} | {stats['p50']:.1f} | {stats['p90']:.1f} | {stats['p99']:.1f} | "
                         f"{stats['max']:.1f} |")
    lines += ["", "## Detection scored three ways", "",
              "| keyframes scored | with | mAP | NDS |", "|---|---|---|---|",
              f"| all {result['keyframes_total']} | the output of the keyframe's own sweep (none when it was dropped) "
              f"| {result['map']:.3f} | {result['nds']:.3f} |"]
    own = result["detection_evaluated_keyframes"]
    if own["map"] is not None:
        lines.append(f"| the {own['keyframes']} with their own output | that output | {own['map']:.3f} | "
                     f"{own['nds']:.3f} |")
    held = result["detection_latest_output"]
    if held["keyframes_with_output"]:
        lines.append(f"| all {result['keyframes_total']} | the newest output at the keyframe's time (at most "
                     f"{held['max_age_s']:g} s old, boxes moved along their velocity; {held['keyframes_with_output']}"
                     f" keyframes had one, age p50 {held['age_ms_p50']:.0f} ms) | {held['map']:.3f} | "
                     f"{held['nds']:.3f} |")
    lines += ["", f"## Keyframes: {result['keyframes_evaluated']} of {result['keyframes_total']} evaluated", ""]
    if result["dropped"]:
        lines += ["| scene | sample_token | LiDAR stamp (us) | reason |", "|---|---|---|---|"]
        lines += [f"| {d['scene']} | {d['sample_token']} | {d['stamp_us']} | {d['reason']} |"
                  for d in result["dropped"]]
    else:
        lines.append("Every keyframe was evaluated.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI


def replay_eval(dataroot: str | Path, version: str, scenes: list[str] | None = None, rate: float = 1.0,
                out: str | Path = "out/replay", bags: str | Path | None = None, backend: str | None = None,
                checkpoint: str | None = None, model_config: str | None = None, eval_set: str | None = None,
                params: dict | None = None, calibration: bool = False, lockstep: bool = False, log=print) -> dict:
    from bevfusion_ros.data.bag_convert import convert_scene
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.eval.detection import infer_eval_set

    if not rate > 0:
        raise UserError(f"--rate must be positive, got {rate}")
    isolate_ros_graph()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    nusc = open_nuscenes(dataroot, version)
    eval_set = eval_set or infer_eval_set(nusc)
    scenes = list(scenes) if scenes else default_scenes(nusc, eval_set)
    if not scenes:
        raise UserError(f"no scenes to replay for eval set {eval_set!r}")
    bag_dir = Path(bags) if bags else out_dir / "bags"
    bag_dir.mkdir(parents=True, exist_ok=True)
    # the player publishes RELIABLE: subscribe reliable too, so no message is lost whole under CPU load
    overrides = {"backend": backend, "reliable_sensors": True, **(params or {})}
    if lockstep:   # nothing is late in lockstep, only slow under load: wait for in-flight inputs longer
        overrides.setdefault("max_input_wait", 0.5)
    if checkpoint is not None:
        overrides["checkpoint"] = str(Path(checkpoint).resolve()) if checkpoint else ""
    if model_config is not None:
        overrides["model_config"] = str(Path(model_config).resolve())
    params_file = write_params(out_dir, overrides)
    backend = params_backend(params_file)          # None above: config/perception.yaml's
    records: dict[str, SceneRecord] = {}
    t0 = time.monotonic()
    for scene in scenes:
        bag = bag_dir / scene
        if not bag.exists():
            log(f"[replay-eval] converting {scene} -> {bag}")
            convert_scene(dataroot, version, scene, bag, progress=False)
        stamps, keyframes = scene_lidar_stamps(nusc, scene)
        pace = "in lockstep with the node" if lockstep else f"at {rate:g}x"
        log(f"[replay-eval] replaying {scene}: {len(stamps)} sweeps, {len(keyframes)} keyframes {pace}")
        records[scene] = replay_scene(bag, params_file, keyframes, stamps, rate, out_dir / "logs" / scene,
                                      calibration=calibration, lockstep=lockstep)
        rec = records[scene]
        processed = sum(1 for s in rec.statuses.values() if s["status"] == "processed")
        log(f"[replay-eval]   {processed}/{len(stamps)} sweeps processed")
    result = evaluate_records(nusc, eval_set, scenes, records, out_dir, backend, "lockstep" if lockstep else rate,
                              extra={"wall_s": round(time.monotonic() - t0, 1),
                                     "checkpoint": overrides.get("checkpoint", "(config default)"),
                                     "map_fusion": bool(overrides.get("map_fusion", True))})
    return result


def params_backend(params_file: Path) -> str:
    """The back-end a node started with ``params_file`` runs."""
    data = yaml.safe_load(Path(params_file).read_text()) or {}
    return str(data.get("/**", {}).get("ros__parameters", {}).get("backend", "torch"))


def summary_lines(result: dict) -> list[str]:
    lat = result["latency_ms"]

    def fmt(v, d=3):
        return "n/a" if v is None else f"{v:.{d}f}"
    own = result.get("detection_evaluated_keyframes") or {}
    held = result.get("detection_latest_output") or {}
    return [f"mAP {fmt(result['map'])}  NDS {fmt(result['nds'])}  map mIoU {fmt(result['mapseg_miou'])}",
            f"keyframes with their own output: mAP {fmt(own.get('map'))}  NDS {fmt(own.get('nds'))}; every keyframe "
            f"with the newest output: mAP {fmt(held.get('map'))}  NDS {fmt(held.get('nds'))}",
            f"latency end-to-end p50 {fmt(lat['p50'], 1)} ms  p90 {fmt(lat['p90'], 1)} ms  p99 {fmt(lat['p99'], 1)} ms",
            f"keyframes {result['keyframes_evaluated']}/{result['keyframes_total']} evaluated, "
            f"{len(result['dropped'])} dropped; sweeps processed {result['frames']['processed']}/"
            f"{result['frames']['lidar_sweeps_played']}; frames with masked cameras {result['masked_camera_frames']}"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataset folder")
    parser.add_argument("--version", required=True, help="table folder, e.g. v1.0-mini")
    parser.add_argument("--scenes", nargs="+", default=None, help="scene names (default: the eval set's scenes)")
    parser.add_argument("--eval-set", default=None, help="devkit split (default: inferred from the dataset)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed (1.0 = real time)")
    parser.add_argument("--out", default="out/replay", help="report folder")
    parser.add_argument("--bags", default=None, help="folder of existing bags named after the scenes "
                                                     "(converted there when missing; default OUT/bags)")
    parser.add_argument("--backend", default=None, choices=("torch", "onnxruntime", "tensorrt"),
                        help="inference back-end (default: config/perception.yaml's)")
    parser.add_argument("--checkpoint", default=None, help="override the checkpoint ('' = untrained weights)")
    parser.add_argument("--model-config", default=None, help="override the model config")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                        help="override a perception_node parameter (YAML value)")
    parser.add_argument("--calibration", action="store_true", help="also run the calibration node")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="instead of evaluating: loop the first scene's bag at --rate for SECONDS and report "
                             "memory growth, latency and drops (OUT/soak.json)")
    parser.add_argument("--lockstep", action="store_true",
                        help="publish each sweep only after the node has handled the previous one: every frame "
                             "is processed (accuracy independent of speed; latencies are not real-time)")


def run(args: argparse.Namespace) -> int:
    params = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects PARAM=VALUE, got {item!r}")
        params[key] = yaml.safe_load(value)
    if args.soak is not None:
        return run_soak(args, params)
    result = replay_eval(args.dataroot, args.version, args.scenes, args.rate, args.out, args.bags, args.backend,
                         args.checkpoint, args.model_config, args.eval_set, params, args.calibration,
                         args.lockstep)
    for line in summary_lines(result):
        print(line)
    print(f"report: {Path(args.out) / 'report.md'} ({Path(args.out) / 'report.json'})")
    return 0


def run_soak(args: argparse.Namespace, params: dict) -> int:
    from bevfusion_ros.data.bag_convert import convert_scene
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.eval.detection import infer_eval_set
    isolate_ros_graph()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    nusc = open_nuscenes(args.dataroot, args.version)
    scene = (args.scenes or default_scenes(nusc, args.eval_set or infer_eval_set(nusc)))[0]
    bag_dir = Path(args.bags) if args.bags else out_dir / "bags"
    bag_dir.mkdir(parents=True, exist_ok=True)
    if not (bag_dir / scene).exists():
        convert_scene(args.dataroot, args.version, scene, bag_dir / scene, progress=False)
    overrides = {"backend": args.backend, "reliable_sensors": True, **params}
    if args.checkpoint is not None:
        overrides["checkpoint"] = str(Path(args.checkpoint).resolve()) if args.checkpoint else ""
    result = soak(bag_dir / scene, write_params(out_dir, overrides), args.rate, args.soak, out_dir)
    lat, mem = result["latency_ms"], result["memory_mb"]
    growth = "n/a" if result["memory_growth"] is None else f"{100 * result['memory_growth']:+.1f}%"
    print(f"soak {scene} at {args.rate:g}x for {args.soak:g} s: {result['processed']} processed, "
          f"{result['dropped']} dropped; end-to-end p50 {lat['p50']} ms p99 {lat['p99']} ms; "
          f"RSS {mem['after_warmup']} -> {mem['end']} MB ({growth}); crashed: {result['node_crashed']}")
    print(f"soak report: {out_dir / 'soak.json'}")
    return 0
