"""`bevfusion-ros calibrate-eval`: SemAlign on seeded perturbations of known extrinsics.

Stages in order (like the devkit's evaluator): load frames + truth -> draw the seeded perturbation list ->
calibrate each -> errors -> metrics -> render (JSON, markdown, PNG).

Perturbations (per axis, uniform): roll, pitch, yaw in [-R, R] deg and x, y, z in [-T, T] m, composed as
R = Rz(yaw) Ry(pitch) Rx(roll).
- ``--mode per_camera``: every camera gets its own perturbation ΔT_i and starts from
  T_init_i = ΔT_i @ T_true_i (T = T_cam_lidar, i.e. the camera moved in its own frame); each camera is a
  sample of the error statistics.
- ``--mode rig``: one perturbation Δ of the LiDAR in its own frame per trial,
  T_init_i = T_true_i @ Δ for all cameras; the error is the residual LiDAR transform E = T_true_i^-1 T_pred_i
  (the same for every camera).
Errors: rotation = geodesic angle of E in degrees (per axis: |rotation vector| components), translation =
|E.t| in cm (per axis: |components|). Success: < 1 deg and < 5 cm.

Data: ``--sample-json`` = the real nuScenes keyframe with box-derived labels (one frame); ``--dataroot`` = a
nuScenes-format dataset with ground-truth semantics (synthetic generator output), ``--frames`` consecutive
keyframes of one scene.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.calib_io import rpy_to_matrix
from bevfusion_ros.calibration.semalign import BOX_LABEL_PRESET, CalibrationConfig, Calibrator
from bevfusion_ros.calibration.semantics import SemanticFrame
from bevfusion_ros.errors import UserError

SUCCESS_ROT_DEG = 1.0
SUCCESS_TRANS_CM = 5.0


@dataclass
class EvalData:
    frames: list[SemanticFrame]
    truth: dict[str, np.ndarray]            # T_cam_lidar per camera
    images: dict[str, np.ndarray | None]    # first frame's RGB images (for the PNG)
    source: str


def load_eval_data(sample_json: str | None, dataroot: str | None, frames: int, scene: str | None) -> EvalData:
    if bool(sample_json) == bool(dataroot):
        raise UserError("give exactly one of --sample-json and --dataroot")
    if sample_json:
        from bevfusion_ros.calibration.providers import load_sample_json, sample_semantic_frame
        record = load_sample_json(sample_json, with_images=True)
        # truth = the static rig; the per-camera ego motion rides on the frame (see load_sample_json)
        return EvalData([sample_semantic_frame(record)], record.static_extrinsics(),
                        {n: v.image for n, v in record.views.items()}, f"{sample_json} (box-derived labels)")
    from bevfusion_ros.calibration.providers import SynthGroundTruthProvider, _read_rgb
    provider = SynthGroundTruthProvider(dataroot)
    tokens = provider.sample_tokens(scene)
    if scene is None:                        # first scene with enough keyframes
        first = provider.nusc.scene[0]
        tokens = provider.sample_tokens(first["name"])
    if not tokens:
        raise UserError(f"no samples in {dataroot}")
    chosen = tokens[:max(1, frames)]
    loaded = [provider.frame(tok) for tok in chosen]
    sample = provider.nusc.get("sample", chosen[0])
    images = {}
    for name in loaded[0].T_cam_lidar:
        sd = provider.nusc.get("sample_data", sample["data"][name])
        images[name] = _read_rgb(Path(dataroot) / sd["filename"])
    return EvalData([d.frame for d in loaded], loaded[0].T_cam_lidar, images,
                    f"{dataroot} ({len(loaded)} keyframes, ground-truth semantics)")


def perturbation(rng: np.random.Generator, rot_deg: float, trans_m: float) -> np.ndarray:
    roll, pitch, yaw = np.radians(rng.uniform(-rot_deg, rot_deg, 3))
    T = np.eye(4)
    T[:3, :3] = rpy_to_matrix(roll, pitch, yaw)
    T[:3, 3] = rng.uniform(-trans_m, trans_m, 3)
    return T


def run_trials(data: EvalData, config: CalibrationConfig, trials: int, seed: int, rot_deg: float, trans_m: float,
               log=print) -> dict:
    calibrator = Calibrator(config)
    rng = np.random.default_rng(seed)
    cams = list(data.truth)
    errors, runtimes, records = [], [], []
    first_result = None
    for trial in range(trials):
        if config.mode == "rig":
            delta = perturbation(rng, rot_deg, trans_m)
            prior = {c: data.truth[c] @ delta for c in cams}
        else:
            prior = {c: perturbation(rng, rot_deg, trans_m) @ data.truth[c] for c in cams}
        result = calibrator.calibrate(data.frames, prior, cams)
        runtimes.append(result.duration)
        if first_result is None:
            first_result = (prior, result)
        if config.mode == "rig":
            E = lie.invert(data.truth[cams[0]]) @ result.T[cams[0]]
            E0 = lie.invert(data.truth[cams[0]]) @ prior[cams[0]]
            samples = [("rig", E, E0)]
        else:
            samples = [(c, result.T[c] @ lie.invert(data.truth[c]), prior[c] @ lie.invert(data.truth[c])) for c in cams]
        for name, E, E0 in samples:
            rot, trans, rot_axes, trans_axes = lie.transform_error(E, np.eye(4))
            rot0, trans0, _, _ = lie.transform_error(E0, np.eye(4))
            errors.append((rot, trans * 100, rot_axes, trans_axes * 100))
            records.append({"trial": trial, "unit": name, "rot_err_deg": rot, "trans_err_cm": trans * 100,
                            "init_rot_deg": rot0, "init_trans_cm": trans0 * 100})
        worst = max(e[0] for e in errors[-len(samples):]), max(e[1] for e in errors[-len(samples):])
        log(f"trial {trial + 1}/{trials}: {result.duration:.1f} s, worst rot {worst[0]:.3f} deg, "
            f"trans {worst[1]:.2f} cm")
    rot = np.array([e[0] for e in errors])
    trans = np.array([e[1] for e in errors])
    rot_axes = np.array([e[2] for e in errors])
    trans_axes = np.array([e[3] for e in errors])
    metrics = {
        "trials": trials, "samples": len(errors), "mode": config.mode, "source": data.source,
        "rot_range_deg": rot_deg, "trans_range_m": trans_m, "seed": seed, "frames": len(data.frames),
        "cameras": cams,
        "rot_err_deg_mean": float(rot.mean()), "rot_err_deg_median": float(np.median(rot)),
        "rot_err_deg_std": float(rot.std()), "rot_err_deg_max": float(rot.max()),
        "trans_err_cm_mean": float(trans.mean()), "trans_err_cm_median": float(np.median(trans)),
        "trans_err_cm_std": float(trans.std()), "trans_err_cm_max": float(trans.max()),
        "rot_err_deg_axis_mean": rot_axes.mean(0).tolist(), "trans_err_cm_axis_mean": trans_axes.mean(0).tolist(),
        "success_rate": float(np.mean((rot < SUCCESS_ROT_DEG) & (trans < SUCCESS_TRANS_CM))),
        "success_rate_2deg_5cm": float(np.mean((rot < 2.0) & (trans < 5.0))),
        "success_rate_1deg_2p5cm": float(np.mean((rot < 1.0) & (trans < 2.5))),
        "runtime_s_mean": float(np.mean(runtimes)), "runtime_s_max": float(np.max(runtimes)),
        "threads": config.threads, "cpu": platform.processor() or platform.machine(),
        "load_avg_1min": os.getloadavg()[0],
        "config": config.to_dict(), "per_trial": records,
    }
    metrics["_first"] = first_result
    return metrics


def markdown_table(m: dict) -> str:
    axes = ", ".join(f"{v:.3f}" for v in m["rot_err_deg_axis_mean"])
    taxes = ", ".join(f"{v:.2f}" for v in m["trans_err_cm_axis_mean"])
    return "\n".join([
        f"SemAlign calibrate-eval — {m['source']}, mode `{m['mode']}`, {m['trials']} trials "
        f"({m['samples']} samples), ±{m['rot_range_deg']}° / ±{m['trans_range_m']} m, {m['frames']} frame(s), "
        f"seed {m['seed']}",
        "",
        "| metric | mean | median | std | max |",
        "|---|---|---|---|---|",
        f"| rotation error (deg) | {m['rot_err_deg_mean']:.3f} | {m['rot_err_deg_median']:.3f} | "
        f"{m['rot_err_deg_std']:.3f} | {m['rot_err_deg_max']:.3f} |",
        f"| translation error (cm) | {m['trans_err_cm_mean']:.2f} | {m['trans_err_cm_median']:.2f} | "
        f"{m['trans_err_cm_std']:.2f} | {m['trans_err_cm_max']:.2f} |",
        "",
        f"- per-axis mean rotation error (deg, x/y/z of the rotation vector): {axes}",
        f"- per-axis mean translation error (cm, x/y/z): {taxes}",
        f"- success (< 1° and < 5 cm): {m['success_rate']:.1%}; < 2°/5 cm: {m['success_rate_2deg_5cm']:.1%}; "
        f"< 1°/2.5 cm: {m['success_rate_1deg_2p5cm']:.1%}",
        f"- runtime per calibration: mean {m['runtime_s_mean']:.2f} s, max {m['runtime_s_max']:.2f} s "
        f"({m['threads']} torch threads, load average {m['load_avg_1min']:.1f})",
        "",
    ])


def _palette(label: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(int(label) * 7919 + 11)
    return tuple(int(v) for v in rng.integers(64, 256, 3))


def render_overlay(frame: SemanticFrame, camera: str, image: np.ndarray | None, T: np.ndarray, title: str) -> np.ndarray:
    """BGR image of the camera with the frame's labeled points projected under T, colored by class."""
    cam = frame.cameras[camera]
    width, height = cam.size
    canvas = image[:, :, ::-1].copy() if image is not None else np.full((height, width, 3), 40, np.uint8)
    pts = frame.points[:, :3].astype(np.float64)
    if cam.lidar_motion is not None:
        pts = pts @ cam.lidar_motion[:3, :3].T + cam.lidar_motion[:3, 3]
    pc = pts @ T[:3, :3].T + T[:3, 3]
    keep = (pc[:, 2] > 0.5) & (frame.point_labels >= 0)
    uv = pc[keep, :2] / pc[keep, 2:3] * [cam.intrinsic[0, 0], cam.intrinsic[1, 1]] + cam.intrinsic[:2, 2]
    for (u, v), label in zip(uv, frame.point_labels[keep]):
        if 0 <= u < width and 0 <= v < height:
            cv2.circle(canvas, (int(u), int(v)), 2, _palette(label), -1)
    cv2.putText(canvas, title, (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3)
    return canvas


def write_outputs(out: Path, metrics: dict, data: EvalData) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prior, result = metrics.pop("_first")
    (out / "calibrate_eval.json").write_text(json.dumps(metrics, indent=2))
    (out / "calibrate_eval.md").write_text(markdown_table(metrics))
    camera = "CAM_FRONT" if "CAM_FRONT" in result.T else next(iter(result.T))
    frame = data.frames[0]
    image = data.images.get(camera)
    before = render_overlay(frame, camera, image, prior[camera], f"{camera} before (trial 1 prior)")
    after = render_overlay(frame, camera, image, result.T[camera], f"{camera} after SemAlign")
    panel = np.concatenate([before, after], 0)
    scale = 1000.0 / panel.shape[1]
    panel = cv2.resize(panel, (1000, int(panel.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out / "calibrate_eval.png"), panel)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataroot", help="nuScenes-format dataset with lidarseg + semantic masks (synthetic)")
    source.add_argument("--sample-json", help="the real keyframe's sample.json (box-derived labels)")
    parser.add_argument("--out", required=True, help="output folder (calibrate_eval.json / .md / .png)")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rot-deg", type=float, default=10.0, help="per-axis rotation perturbation range (deg)")
    parser.add_argument("--trans-m", type=float, default=0.5, help="per-axis translation perturbation range (m)")
    parser.add_argument("--frames", type=int, default=5, help="keyframes per calibration (--dataroot)")
    parser.add_argument("--scene", default=None, help="scene name (--dataroot; default: the first scene)")
    parser.add_argument("--mode", choices=("per_camera", "rig"), default="rig")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--config", default=None, help="YAML/JSON with CalibrationConfig overrides")


def load_config(path: str | None, base: dict | None = None, **overrides) -> CalibrationConfig:
    """CalibrationConfig from ``base`` (a preset such as BOX_LABEL_PRESET), then the file, then overrides."""
    data: dict = dict(base or {})
    if path:
        import yaml
        try:
            data.update(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError) as err:
            raise UserError(f"cannot read calibration config {path}: {err}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CalibrationConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"bad calibration config: {err}") from None


def run(args: argparse.Namespace) -> int:
    if args.trials < 1:
        raise UserError("--trials must be >= 1")
    if not (args.rot_deg >= 0 and args.trans_m >= 0 and math.isfinite(args.rot_deg) and math.isfinite(args.trans_m)):
        raise UserError("--rot-deg and --trans-m must be finite and >= 0")
    import torch
    torch.set_num_threads(args.threads)
    # box-derived labels (--sample-json) get their preset (semalign.BOX_LABEL_PRESET); --config still overrides
    config = load_config(args.config, base=BOX_LABEL_PRESET if args.sample_json else None, mode=args.mode,
                         threads=args.threads,
                         rot_range_deg=max(args.rot_deg * 1.2, 2.0), trans_range_m=max(args.trans_m * 1.2, 0.1))
    start = time.perf_counter()
    data = load_eval_data(args.sample_json, args.dataroot, args.frames, args.scene)
    metrics = run_trials(data, config, args.trials, args.seed, args.rot_deg, args.trans_m)
    metrics["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    write_outputs(out, metrics, data)
    print(markdown_table(metrics))
    print(f"wrote {out / 'calibrate_eval.json'}, {out / 'calibrate_eval.md'}, {out / 'calibrate_eval.png'}")
    return 0
