"""Evaluation reports: a JSON file, a markdown summary, and PNG figures.

Plain functions shared by offline evaluation (``bevfusion-ros eval``) and the replay evaluation:

- :func:`write_report` -- ``<out>/eval.json`` (or another name) + ``<out>/report.md`` from a metrics dict;
- :func:`plot_bev` -- bird's-eye view of a frame: points, map probabilities / GT map, GT and predicted boxes;
- :func:`plot_camera_boxes` -- a camera image with LiDAR-frame boxes projected into it (cv2);
- :func:`plot_latency_histogram` -- per-stage latency histograms with p50/p90/p99 marks.

Conventions: boxes are ``[x, y, z, l, w, h, yaw, ...]`` in the LiDAR frame (geometry.py); BEV maps are
``[C, X, Y]`` with axis 1 along x (frame.BEVMap). BEV plots draw LiDAR x to the right and y up.
matplotlib runs on the Agg backend (no display needed).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from bevfusion_ros.classes import DETECTION_CLASSES, MAP_CLASSES

# Colours (RGB 0..1) per detection class and per map class.
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (1.0, 0.62, 0.0), "truck": (1.0, 0.39, 0.28), "bus": (1.0, 0.27, 0.0), "trailer": (1.0, 0.55, 0.55),
    "construction_vehicle": (0.91, 0.59, 0.48), "pedestrian": (0.0, 0.0, 0.9), "motorcycle": (1.0, 0.24, 0.39),
    "bicycle": (0.86, 0.08, 0.24), "traffic_cone": (0.18, 0.31, 0.31), "barrier": (0.44, 0.5, 0.56),
}
MAP_COLORS: dict[str, tuple[float, float, float]] = {
    "drivable_area": (0.65, 0.81, 0.89), "ped_crossing": (0.98, 0.6, 0.6), "walkway": (0.89, 0.1, 0.11),
    "stop_line": (0.99, 0.75, 0.44), "carpark_area": (1.0, 0.5, 0.0), "divider": (0.42, 0.24, 0.6),
}


def _json_safe(value):
    """numpy scalars/arrays -> Python; NaN/inf -> None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"
    return str(value)


def metrics_markdown(metrics: Mapping, title: str = "Evaluation") -> str:
    """Markdown summary: scalar metrics, then per-class detection (AP + TP errors) and map IoU tables,
    then any other sections of plain {name: scalar} dicts."""
    lines = [f"# {title}", ""]
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, (Mapping, list, tuple))}
    if scalars:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
        lines.append("")
    done = set(scalars)
    tp = metrics.get("tp_errors")
    if isinstance(tp, Mapping):
        names = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
                 "attr_err": "mAAE"}
        lines += ["## Detection TP errors", "", "| error | value |", "|---|---|"]
        lines += [f"| {names.get(k, k)} | {_fmt(v)} |" for k, v in tp.items()]
        lines.append("")
        done.add("tp_errors")
    ap = metrics.get("per_class_ap")
    if isinstance(ap, Mapping):
        per_tp = metrics.get("per_class_tp_errors") or {}
        cols = ["trans_err", "scale_err", "orient_err", "vel_err", "attr_err"]
        lines += ["## Detection per class", "", "| class | AP | ATE | ASE | AOE | AVE | AAE |",
                  "|---|---|---|---|---|---|---|"]
        for name, value in ap.items():
            errs = per_tp.get(name, {}) if isinstance(per_tp, Mapping) else {}
            lines.append(f"| {name} | {_fmt(value, 3)} | " + " | ".join(_fmt(errs.get(c), 3) for c in cols) + " |")
        lines.append("")
        done |= {"per_class_ap", "per_class_tp_errors"}
    iou = metrics.get("mapseg_iou")
    if isinstance(iou, Mapping):
        lines += ["## Map segmentation IoU (max over thresholds 0.35..0.65)", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v, 3)} |" for k, v in iou.items()]
        lines.append("")
        done.add("mapseg_iou")
    for key, value in metrics.items():
        if key in done or not isinstance(value, Mapping) or not value:
            continue
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value.values()):
            lines += [f"## {key}", "", "| key | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in value.items()]
            lines.append("")
    return "\n".join(lines)


def write_report(out_dir: str | Path, metrics: Mapping, title: str = "Evaluation",
                 images: Sequence[str | Path] = (), json_name: str = "eval.json", md_name: str = "report.md",
                 extra_markdown: str = "") -> dict[str, Path]:
    """Write ``metrics`` as strict JSON (NaN -> null) and a markdown summary linking ``images``
    (paths, shown relative to ``out_dir``). Returns {"json": path, "markdown": path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / json_name
    json_path.write_text(json.dumps(_json_safe(dict(metrics)), indent=2, allow_nan=False) + "\n")
    md = metrics_markdown(metrics, title)
    if images:
        md += "\n## Figures\n\n"
        for image in images:
            image = Path(image)
            try:
                rel = image.resolve().relative_to(out_dir.resolve())
            except ValueError:
                rel = image
            md += f"![{image.stem}]({rel.as_posix()})\n\n"
    if extra_markdown:
        md += "\n" + extra_markdown.strip() + "\n"
    md_path = out_dir / md_name
    md_path.write_text(md)
    return {"json": json_path, "markdown": md_path}


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _footprints(boxes: np.ndarray) -> np.ndarray:
    """BEV footprint corners [N, 4, 2] (x, y) of boxes [N, >=7]."""
    from bevfusion_ros.geometry import box_corners
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4, 2))
    boxes = np.atleast_2d(boxes)
    return box_corners(boxes)[:, :4, :2]


def _map_rgba(probs: np.ndarray, classes: Sequence[str], threshold: float | None, alpha: float) -> np.ndarray:
    """[Y, X, 4] image (origin lower) of class colours weighted by probability (or a hard threshold)."""
    probs = np.asarray(probs, dtype=np.float32)
    rgba = np.ones((probs.shape[2], probs.shape[1], 4), np.float32)   # blend over white
    rgba[..., 3] = 0.0
    for k, name in enumerate(classes):
        p = probs[k].T  # [Y, X]
        if threshold is not None:
            p = (p >= threshold).astype(np.float32)
        colour = np.array(MAP_COLORS.get(name, (0.5, 0.5, 0.5)), np.float32)
        a = p * alpha
        rgba[..., :3] = rgba[..., :3] * (1 - a[..., None]) + colour * a[..., None]
        rgba[..., 3] = np.maximum(rgba[..., 3], a)
    return rgba


def plot_bev(path: str | Path, *, points: np.ndarray | None = None, gt_boxes: np.ndarray | None = None,
             gt_labels: np.ndarray | None = None, pred_boxes: np.ndarray | None = None,
             pred_labels: np.ndarray | None = None, pred_scores: np.ndarray | None = None,
             score_threshold: float = 0.3, map_probs: np.ndarray | None = None, gt_map: np.ndarray | None = None,
             map_bounds: tuple[float, float, float] | None = None, map_classes: Sequence[str] = MAP_CLASSES,
             map_threshold: float | None = None, extent: float = 54.0, title: str = "",
             dpi: int = 100) -> Path:
    """Bird's-eye view PNG: LiDAR points (grey), predicted map (left panel, when given) and GT map (right
    panel), GT boxes (green outlines) and predictions (class-coloured, score >= ``score_threshold``).

    ``map_bounds`` = (x_min, y_min, resolution) of the [C, X, Y] maps (frame.BEVMap fields).
    """
    plt = _pyplot()
    panels = [("prediction", map_probs), ("ground truth", gt_map)] if gt_map is not None else [("", map_probs)]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 7), squeeze=False)
    gt_fp = _footprints(gt_boxes) if gt_boxes is not None else np.zeros((0, 4, 2))
    pred_fp = np.zeros((0, 4, 2))
    keep = np.zeros(0, bool)
    if pred_boxes is not None and len(pred_boxes):
        scores = np.ones(len(pred_boxes)) if pred_scores is None else np.asarray(pred_scores)
        keep = scores >= score_threshold
        pred_fp = _footprints(np.asarray(pred_boxes)[keep])
    for ax, (name, bev) in zip(axes[0], panels):
        ax.set_facecolor("white")
        if bev is not None and map_bounds is not None:
            x0, y0, res = map_bounds
            bev = np.asarray(bev)
            ax.imshow(_map_rgba(bev, map_classes, map_threshold if name != "ground truth" else 0.5, 0.8),
                      origin="lower", extent=(x0, x0 + bev.shape[1] * res, y0, y0 + bev.shape[2] * res),
                      interpolation="nearest")
        if points is not None and len(points):
            pts = np.asarray(points)
            near = (np.abs(pts[:, 0]) < extent) & (np.abs(pts[:, 1]) < extent)
            pts = pts[near]
            if len(pts) > 60000:
                pts = pts[:: int(np.ceil(len(pts) / 60000))]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c="0.35", alpha=0.5, linewidths=0)
        for k, fp in enumerate(gt_fp):
            ring = np.vstack([fp, fp[:1]])
            ax.plot(ring[:, 0], ring[:, 1], color=(0.0, 0.7, 0.0), linewidth=1.4)
        pl = np.asarray(pred_labels)[keep] if pred_labels is not None and len(keep) else None
        for k, fp in enumerate(pred_fp):
            cls = DETECTION_CLASSES[int(pl[k])] if pl is not None and 0 <= int(pl[k]) < len(DETECTION_CLASSES) else ""
            ring = np.vstack([fp, fp[:1]])
            ax.plot(ring[:, 0], ring[:, 1], color=CLASS_COLORS.get(cls, (1, 0, 0)), linewidth=1.0, linestyle="--")
            front = fp[:2].mean(axis=0)
            centre = fp.mean(axis=0)
            ax.plot([centre[0], front[0]], [centre[1], front[1]], color=CLASS_COLORS.get(cls, (1, 0, 0)),
                    linewidth=0.8)
        ax.plot([0], [0], marker=">", color="k", markersize=8)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m, forward)")
        ax.set_ylabel("y (m, left)")
        ax.set_title(" - ".join(s for s in (title, name) if s))
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=(0.0, 0.7, 0.0), label="GT box"),
               Line2D([], [], color=(1, 0.5, 0), linestyle="--", label="prediction")]
    handles += [Line2D([], [], color=MAP_COLORS.get(c, (0.5, 0.5, 0.5)), linewidth=6, label=c) for c in map_classes
                if (map_probs is not None or gt_map is not None)]
    axes[0][-1].legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# Box edges as corner-index pairs (geometry.box_corners order: bottom 0-3, top 4-7).
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def project_boxes(boxes: np.ndarray, intrinsic: np.ndarray, T_lidar_cam: np.ndarray, min_depth: float = 0.1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Image corners [N, 8, 2] of LiDAR-frame boxes and a per-box flag: all corners in front of the camera."""
    from bevfusion_ros.geometry import box_corners, invert_transform, project_to_image, transform_points
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.zeros((0, 8, 2)), np.zeros(0, bool)
    corners = box_corners(boxes).reshape(-1, 3)
    cam = transform_points(invert_transform(T_lidar_cam), corners)
    uv, front = project_to_image(cam, intrinsic, min_depth)
    return uv.reshape(-1, 8, 2), front.reshape(-1, 8).all(axis=1)


def plot_camera_boxes(image: np.ndarray, boxes: np.ndarray, intrinsic: np.ndarray, T_lidar_cam: np.ndarray,
                      labels: np.ndarray | None = None, path: str | Path | None = None,
                      color: tuple[int, int, int] | None = None, thickness: int = 2) -> np.ndarray:
    """Draw LiDAR-frame 3D boxes on an RGB image (H x W x 3 uint8) with cv2; boxes partly behind the
    camera are skipped. Writes a PNG when ``path`` is given; returns the drawn RGB image."""
    import cv2
    canvas = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    uv, ok = project_boxes(boxes, intrinsic, T_lidar_cam)
    h, w = canvas.shape[:2]
    for k in np.flatnonzero(ok):
        pts = uv[k]
        if (pts[:, 0].max() < 0 or pts[:, 0].min() >= w or pts[:, 1].max() < 0 or pts[:, 1].min() >= h):
            continue
        if color is not None:
            rgb = color
        else:
            cls = DETECTION_CLASSES[int(labels[k])] if labels is not None and 0 <= int(labels[k]) < 10 else ""
            rgb = tuple(int(255 * c) for c in CLASS_COLORS.get(cls, (1.0, 0.0, 0.0)))
        p = np.round(np.clip(pts, -10 * max(h, w), 10 * max(h, w))).astype(np.int32)
        for a, b in _EDGES:
            cv2.line(canvas, tuple(map(int, p[a])), tuple(map(int, p[b])), rgb, thickness, cv2.LINE_AA)
        # mark the front face with a cross
        cv2.line(canvas, tuple(map(int, p[0])), tuple(map(int, p[5])), rgb, 1, cv2.LINE_AA)
        cv2.line(canvas, tuple(map(int, p[1])), tuple(map(int, p[4])), rgb, 1, cv2.LINE_AA)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return canvas


def latency_stats(values_ms: Iterable[float]) -> dict:
    """count, mean, p50, p90, p99, max of a latency series (ms); empty -> count 0 and None values."""
    v = np.asarray(list(values_ms), dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    return {"count": int(len(v)), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def plot_latency_histogram(path: str | Path, latencies_ms: Mapping[str, Sequence[float]] | Sequence[float],
                           title: str = "Latency", budget_ms: float | None = None, bins: int = 40) -> Path:
    """Histogram per series (a dict name -> values, or one list), with p50/p90/p99 marks and an optional
    budget line."""
    plt = _pyplot()
    series = dict(latencies_ms) if isinstance(latencies_ms, Mapping) else {"latency": list(latencies_ms)}
    series = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    n = max(1, len(series))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n), squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], series.items()):
        values = values[np.isfinite(values)]
        if len(values) == 0:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(name)
            continue
        ax.hist(values, bins=bins, color=(0.3, 0.5, 0.8), alpha=0.85)
        stats = latency_stats(values)
        for key, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ax.axvline(stats[key], color="k", linestyle=style, linewidth=1, label=f"{key} {stats[key]:.1f} ms")
        if budget_ms is not None:
            ax.axvline(budget_ms, color="r", linewidth=1.5, label=f"budget {budget_ms:g} ms")
        ax.set_title(f"{name} (n={stats['count']})")
        ax.set_xlabel("ms")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
