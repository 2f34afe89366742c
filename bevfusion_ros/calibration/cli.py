"""`bevfusion-ros calibrate`: run SemAlign offline on a dataset, starting from a rig calibration file.

    bevfusion-ros calibrate --dataroot D [--scene S] [--frames 5] --calib calib/nuscenes.yaml [--apply | --out new.yaml]
    bevfusion-ros calibrate --sample-json ../shared/data/nuscenes-sample/sample.json --calib calib/nuscenes.yaml

The rig file gives the prior (camera extrinsics relative to the LiDAR). The dataset gives the frames and the
semantics (ground truth of a synthetic dataset, or box-derived labels of the real keyframe). The result is
reported per camera; ``--out`` writes it to a new rig file, ``--apply`` rewrites the given one (atomically,
previous file kept as .bak) — both only for cameras whose loss improved, exactly like the node.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bevfusion_ros.calibration import calib_io, lie
from bevfusion_ros.calibration.evaluate import load_config, load_eval_data
from bevfusion_ros.calibration.semalign import BOX_LABEL_PRESET, Calibrator
from bevfusion_ros.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="nuScenes-format dataset with lidarseg + semantic masks")
    source.add_argument("--sample-json", help="the real keyframe's sample.json (box-derived labels)")
    parser.add_argument("--calib", required=True, help="rig calibration YAML giving the prior")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--scene", default=None)
    parser.add_argument("--mode", choices=("per_camera", "rig"), default="rig")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default=None, help="YAML/JSON with CalibrationConfig overrides")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--out", help="write the calibrated rig to this new YAML")
    out.add_argument("--apply", action="store_true", help="rewrite --calib in place (previous kept as .bak)")
    parser.add_argument("--json", help="write the per-camera report as JSON")


def run(args: argparse.Namespace) -> int:
    import torch
    torch.set_num_threads(args.threads)
    rig = calib_io.load_rig(args.calib)
    T_lidar_cam = rig.T_lidar_cam()
    data = load_eval_data(args.sample_json, args.dataroot, args.frames, args.scene)
    cameras = [c for c in T_lidar_cam if any(c in f.cameras for f in data.frames)]
    if not cameras:
        raise UserError(f"no camera of {args.calib} appears in the data")
    prior = {c: lie.invert(T_lidar_cam[c]) for c in cameras}
    result = Calibrator(load_config(args.config, base=BOX_LABEL_PRESET if args.sample_json else None,
                                  mode=args.mode, threads=args.threads)).calibrate(data.frames, prior, cameras)
    report = {"success": result.success, "loss": result.loss, "prior_loss": result.prior_loss,
              "confidence": result.confidence, "duration_s": result.duration, "reason": result.reason,
              "cameras": {}}
    for cam in cameras:
        rot, trans, _, _ = lie.transform_error(result.T[cam], prior[cam])
        report["cameras"][cam] = {"updated": cam in result.improved_cameras, "change_deg": rot, "change_cm": trans * 100,
                                  "T_lidar_cam": lie.invert(result.T[cam]).tolist()}
        print(f"{cam:16s} {'updated' if cam in result.improved_cameras else 'kept':8s} "
              f"change {rot:.3f} deg / {trans * 100:.2f} cm")
    print(f"loss {result.prior_loss:.4f} -> {result.loss:.4f}, confidence {result.confidence:.2f}, "
          f"{result.duration:.1f} s: {result.reason}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    updated = {c: lie.invert(result.T[c]) for c in result.improved_cameras}
    if updated and (args.out or args.apply):
        target = Path(args.calib) if args.apply else Path(args.out)
        if args.out:
            new = calib_io.make_rig(rig.rig, rig.T_base(rig.lidar_frame), {**T_lidar_cam, **updated}, rig.base_frame,
                                    rig.lidar_frame, {**rig.metadata, "source": "SemAlign (bevfusion-ros calibrate)"})
            calib_io.save_rig(target, new)
        else:
            calib_io.save_rig_calibration(target, updated, metadata={"source": "SemAlign (bevfusion-ros calibrate)",
                                                                     "loss": float(result.loss)})
        print(f"wrote {target}")
    return 0 if result.success else 1

