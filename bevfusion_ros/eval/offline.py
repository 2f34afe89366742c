"""`bevfusion-ros eval`: offline nuScenes detection + BEV map-segmentation evaluation of a checkpoint.

Every keyframe of the eval set goes through :class:`PerceptionPipeline` (any back-end); detections are
written as a nuScenes submission (eval/detection.py) and scored by the devkit's ``DetectionEval``; map
probabilities are scored against NuScenesMap-rasterized GT with BEVFusion's IoU protocol (eval/mapseg.py).

Writes ``DIR/eval.json`` (``map``, ``nds``, ``per_class_ap``, ``tp_errors``, ``per_class_tp_errors``,
``mapseg_iou`` per class, ``mapseg_miou`` (of the time-fused map when ``map.temporal_fusion`` is on;
``mapseg_miou_single_frame`` beside it), plus run details and latency), ``DIR/eval.md``,
``DIR/submission.json``, BEV figures (GT vs predictions, map probabilities vs GT map), a camera image with
projected boxes and a latency histogram.

``--modality`` picks the sensors fed to the model: ``lidar`` masks every camera (a fusion model then
runs LiDAR-only, the run-time fallback), ``camera`` feeds an empty point cloud; default: the config's.
The eval set defaults to the devkit split that holds the dataset's scenes (nuscenes_io.eval_set_for).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from bevfusion_ros.errors import UserError
from bevfusion_ros.model.map_fusion import TemporalMapFusion

MODALITIES = ("fusion", "lidar", "camera")


def _frame_loader():
    """The training loader's frame_from_sample when present, else the stand-alone one (eval/frames.py)."""
    try:
        from bevfusion_ros.data.dataset import frame_from_sample  # type: ignore
        return frame_from_sample
    except (ImportError, AttributeError):
        from bevfusion_ros.eval.frames import frame_from_sample
        return frame_from_sample


def apply_modality(frame, modality: str):
    """Feed only the chosen sensors: 'lidar' masks every camera, 'camera' empties the point cloud."""
    if modality == "lidar":
        cameras = [dataclasses.replace(cam, image=None) for cam in frame.cameras]
        return dataclasses.replace(frame, cameras=cameras)
    if modality == "camera":
        return dataclasses.replace(frame, points=np.zeros((0, frame.points.shape[1] if frame.points.ndim == 2 else 5),
                                                          np.float32))
    return frame


def check_modality(requested: str | None, config_modality: str) -> str:
    modality = requested or config_modality
    if modality not in MODALITIES:
        raise UserError(f"unknown modality {modality!r} (choose from {', '.join(MODALITIES)})")
    if config_modality != "fusion" and modality != config_modality:
        raise UserError(f"a {config_modality}-only model cannot be evaluated with --modality {modality}")
    return modality


def evaluate(config_path, checkpoint, dataroot, out_dir, eval_set: str | None = None, version: str | None = None,
             backend: str = "torch", modality: str | None = None, device: str = "cpu", threads: int | None = None,
             figures: int = 3, score_threshold: float | None = None, backend_options: dict | None = None,
             quiet: bool = False, map_fusion: bool | None = None, log=print) -> dict:
    """Run the evaluation and write the report; returns the eval.json dict.

    Keyframes run scene by scene in time order, so that the map output can be fused over time as the node
    fuses it (``map.temporal_fusion`` of the config; ``map_fusion`` overrides its ``enabled``). Both the
    fused and the single-frame map IoU are reported."""
    import torch

    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.eval import detection as det_eval
    from bevfusion_ros.eval import report
    from bevfusion_ros.eval.frames import gt_boxes_lidar
    from bevfusion_ros.eval.map_gt import MapCache, sample_map_gt
    from bevfusion_ros.eval.mapseg import MapSegAccumulator, resample_to_grid
    from bevfusion_ros.runtime.backend import available_backends

    if backend not in available_backends():
        raise UserError(f"unknown back-end {backend!r}; choose one of {', '.join(available_backends())}")
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    if checkpoint_path is not None and not checkpoint_path.is_file():
        raise UserError(f"checkpoint {checkpoint_path} not found")
    if not Path(config_path).is_file():
        raise UserError(f"config {config_path} not found")
    if threads:
        torch.set_num_threads(int(threads))
    nusc = open_nuscenes(dataroot, version)
    eval_set = eval_set or det_eval.infer_eval_set(nusc)
    tokens = det_eval.eval_sample_tokens(nusc, eval_set)
    scene_order = {scene["token"]: index for index, scene in enumerate(nusc.scene)}
    tokens = sorted(tokens, key=lambda t: (scene_order.get(nusc.get("sample", t)["scene_token"], -1),
                                           nusc.get("sample", t)["timestamp"]))

    from bevfusion_ros.runtime.pipeline import PerceptionPipeline
    options = dict(backend_options or {})
    if backend == "onnxruntime" and threads:
        options.setdefault("intra_op_threads", int(threads))
    pipeline = PerceptionPipeline(config_path, checkpoint_path, backend=backend, device=device,
                                  score_threshold=score_threshold, **options)
    config = pipeline.config
    modality = check_modality(modality, config.modality)
    load_frame = _frame_loader()
    sweeps = int(getattr(config.lidar, "sweeps", 1))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    map_enabled = bool(config.map.enabled)
    map_classes = tuple(config.map.classes)
    xbound, ybound = list(config.map.xbound), list(config.map.ybound)
    maps = MapCache(nusc.dataroot)
    acc = MapSegAccumulator(map_classes) if map_enabled else None
    fusion_config = config.map.temporal_fusion
    if map_fusion is not None:
        fusion_config = dataclasses.replace(fusion_config, enabled=bool(map_fusion))
    fusion = TemporalMapFusion(fusion_config)
    acc_single = MapSegAccumulator(map_classes) if map_enabled and fusion_config.enabled else None
    map_error = None if map_enabled else "the config has no map head"

    detections, transforms, latencies, stage_ms = {}, {}, [], {}
    fig_idx = set(np.linspace(0, len(tokens) - 1, num=min(figures, len(tokens)), dtype=int).tolist()) if figures else set()
    images = []
    progress = None
    if not quiet:
        from tqdm import tqdm
        progress = tqdm(total=len(tokens), desc=f"eval {eval_set}", unit="frame", file=sys.stderr)
    for index, token in enumerate(tokens):
        frame = apply_modality(load_frame(nusc, token, sweeps=sweeps), modality)
        T_global_lidar = det_eval.lidar_to_global(frame.T_global_ego, frame.T_ego_lidar)
        start = time.perf_counter()
        result = pipeline.infer(frame)
        single_map = result.bev_map
        result.bev_map = fusion.update(result.bev_map, T_global_lidar, frame.stamp_us,
                                       sequence=nusc.get("sample", token)["scene_token"])
        latencies.append(result.timings_ms.get("total", (time.perf_counter() - start) * 1e3))
        for stage, ms in result.timings_ms.items():
            stage_ms.setdefault(stage, []).append(ms)
        detections[token] = result.detections
        transforms[token] = T_global_lidar
        probs = gt_map = None
        if acc is not None and map_error is None and result.bev_map is not None:
            try:
                gt_map = sample_map_gt(nusc, token, xbound, ybound, map_classes, maps, T_global_lidar)
            except UserError as err:
                map_error = str(err)
            else:
                for bev, target in ((single_map, acc_single), (result.bev_map, acc)):
                    if target is None:
                        continue
                    probs = bev.probs
                    if probs.shape != gt_map.shape:
                        probs = resample_to_grid(probs, (bev.x_min, bev.y_min, bev.resolution), xbound, ybound)
                    target.update(probs, gt_map)
        if index in fig_idx:
            gt_boxes, gt_labels, _, _ = gt_boxes_lidar(nusc, token, T_global_lidar)
            det = result.detections
            images.append(report.plot_bev(
                out_dir / f"bev_{index:04d}.png", points=frame.points, gt_boxes=gt_boxes, gt_labels=gt_labels,
                pred_boxes=det.boxes, pred_labels=det.labels, pred_scores=det.scores,
                score_threshold=float(config.detection.score_threshold) if score_threshold is None else score_threshold,
                map_probs=probs, gt_map=gt_map, map_bounds=(xbound[0], ybound[0], xbound[2]), map_classes=map_classes,
                extent=float(max(abs(xbound[0]), abs(xbound[1]), 50.0)),
                title=f"{nusc.get('scene', nusc.get('sample', token)['scene_token'])['name']} #{index} ({modality})"))
            if index == min(fig_idx):
                cam = next((c for c in frame.cameras if c.image is not None), None)
                if cam is not None:   # GT boxes in green, predictions in class colours
                    keep = det.scores >= (config.detection.score_threshold if score_threshold is None
                                          else score_threshold)
                    path = out_dir / f"camera_{cam.name}_{index:04d}.png"
                    drawn = report.plot_camera_boxes(cam.image, gt_boxes, cam.intrinsic, cam.T_lidar_cam,
                                                     color=(0, 200, 0), thickness=1)
                    report.plot_camera_boxes(drawn, det.boxes[keep], cam.intrinsic, cam.T_lidar_cam,
                                             det.labels[keep], path=path)
                    images.append(path)
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()

    submission = det_eval.build_submission(tokens, detections, transforms, meta=det_eval.default_meta(modality))
    sub_path = det_eval.write_submission(out_dir / "submission.json", submission)
    det = det_eval.evaluate_submission(nusc, sub_path, eval_set, out_dir / "detection")
    seg = acc.compute() if acc is not None and acc.frames and map_error is None else None
    seg_single = acc_single.compute() if acc_single is not None and acc_single.frames and map_error is None \
        else seg
    if seg is None and map_error is None:
        map_error = "no map predictions"
    images.append(report.plot_latency_histogram(out_dir / "latency.png", stage_ms, title=f"Per-frame latency "
                                                f"({backend}, {config.name})"))
    sample = nusc.get("sample", tokens[0])
    result = {
        "map": det["map"], "nds": det["nds"], "per_class_ap": det["per_class_ap"],
        "mapseg_iou": None if seg is None else seg["iou"], "mapseg_miou": None if seg is None else seg["miou"],
        "tp_errors": det["tp_errors"],
        "tp_errors_named": {det_eval.TP_ERROR_SHORT[k]: v for k, v in det["tp_errors"].items()},
        "per_class_tp_errors": det["per_class_tp_errors"],
        "map_present_classes": det.get("map_present_classes"), "gt_classes": det.get("gt_classes"),
        "mapseg_miou_present": None if seg is None else seg["miou_present"],
        "mapseg_classes_with_gt": None if seg is None else seg["classes_with_gt"],
        "mapseg_iou_by_threshold": None if seg is None else seg["iou_by_threshold"],
        "mapseg_error": map_error,
        "map_temporal_fusion": dataclasses.asdict(fusion_config),
        "mapseg_miou_single_frame": None if seg_single is None else seg_single["miou"],
        "mapseg_iou_single_frame": None if seg_single is None else seg_single["iou"],
        "eval_set": eval_set, "version": nusc.version, "dataroot": str(dataroot),
        "scenes": sorted({nusc.get("scene", nusc.get("sample", t)["scene_token"])["name"] for t in tokens}),
        "num_samples": len(tokens), "num_pred_boxes": det.get("num_pred_boxes"),
        "config": str(config_path), "config_name": config.name, "checkpoint": str(checkpoint_path) if checkpoint_path else None,
        "backend": backend, "modality": modality, "device": str(device), "threads": threads or torch.get_num_threads(),
        "latency_ms": report.latency_stats(latencies),
        "stage_latency_ms_p50": {k: report.latency_stats(v)["p50"] for k, v in stage_ms.items()},
        "first_sample": sample["token"],
    }
    report.write_report(out_dir, result, title=f"Offline evaluation: {config.name} on {eval_set} ({modality}, {backend})",
                        images=images, json_name="eval.json", md_name="eval.md")
    single = result["mapseg_miou_single_frame"]
    log(f"mAP {result['map']:.4f}  NDS {result['nds']:.4f}  map mIoU "
        f"{'n/a' if result['mapseg_miou'] is None else format(result['mapseg_miou'], '.4f')}"
        f"{f' (single frame {single:.4f})' if fusion_config.enabled and single is not None else ''}  "
        f"({len(tokens)} samples, {eval_set}); report: {out_dir / 'eval.md'}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="model config YAML")
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.pt)")
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (real or synthetic)")
    parser.add_argument("--out", required=True, help="output folder (eval.json, eval.md, figures)")
    parser.add_argument("--eval-set", default=None,
                        help="devkit split or custom split (default: the split holding the dataset's scenes)")
    parser.add_argument("--version", default=None, help="dataset version (default: the one under dataroot)")
    parser.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt (default torch)")
    parser.add_argument("--onnx-dir", default=None, help="use this `bevfusion-ros export` folder (onnxruntime, "
                        "tensorrt) instead of an on-demand export")
    parser.add_argument("--precision", default="fp16", help="TensorRT precision fp32 | fp16 | int8 (default fp16)")
    parser.add_argument("--modality", default=None, choices=MODALITIES,
                        help="sensors fed to the model (default: the config's modality)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--figures", type=int, default=3, help="BEV figures to draw (default 3)")
    parser.add_argument("--score-threshold", type=float, default=None, help="detection score threshold")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--map-fusion", dest="map_fusion", action=argparse.BooleanOptionalAction, default=None,
                        help="fuse the map output over each scene's keyframes (default: the config's "
                        "map.temporal_fusion.enabled)")


def run(args: argparse.Namespace) -> int:
    options = {}
    if args.onnx_dir:
        if args.backend not in ("onnxruntime", "tensorrt"):
            raise UserError("--onnx-dir is for the onnxruntime and tensorrt back-ends")
        options["onnx_dir"] = args.onnx_dir
    if args.backend == "tensorrt":
        options["precision"] = args.precision
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be >= 1")
    evaluate(args.config, args.checkpoint, args.dataroot, args.out, eval_set=args.eval_set, version=args.version,
             backend=args.backend, modality=args.modality, device=args.device, threads=args.threads,
             figures=max(0, args.figures), score_threshold=args.score_threshold, backend_options=options,
             quiet=args.quiet, map_fusion=args.map_fusion)
    return 0
