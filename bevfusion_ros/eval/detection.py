"""nuScenes detection evaluation: submission JSON writer + the devkit's ``DetectionEval``.

Predictions arrive as :class:`bevfusion_ros.frame.Detections` in each sample's LiDAR frame
(``[x, y, z, l, w, h, yaw, vx, vy]``, geometry.py). The nuScenes submission format wants boxes in the
global frame, so each box goes through ``T_global_lidar = T_global_ego @ T_ego_lidar`` with
:func:`bevfusion_ros.geometry.transform_boxes` (yaw gains the transform's heading, the velocity is rotated
as a free vector) and then :func:`bevfusion_ros.geometry.box_to_nuscenes` (size as w, l, h; quaternion
w, x, y, z). The submission lists exactly the eval set's sample tokens (samples without detections get an
empty list), carries the ``meta`` block and at most 500 boxes per sample (the highest scores).

The metrics come from the devkit itself (``DetectionEval`` with ``config_factory('detection_cvpr_2019')``),
never a re-implementation: mAP, NDS, per-class AP and the five TP errors.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from bevfusion_ros.classes import ATTRIBUTES, CLASS_ATTRIBUTES, DETECTION_CLASSES
from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import Detections
from bevfusion_ros.geometry import box_to_nuscenes, make_transform, transform_boxes

MAX_BOXES_PER_SAMPLE = 500
DETECTION_CONFIG = "detection_cvpr_2019"
TP_ERROR_NAMES = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
TP_ERROR_SHORT = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
                  "attr_err": "mAAE"}

# The attribute a class falls back to when the model gives none or one the class cannot carry (the
# devkit's TP attribute error compares names; this is mmdetection3d's DefaultAttribute table).
DEFAULT_ATTRIBUTE: dict[str, str] = {
    "car": "vehicle.parked",
    "pedestrian": "pedestrian.moving",
    "trailer": "vehicle.parked",
    "truck": "vehicle.parked",
    "bus": "vehicle.moving",
    "motorcycle": "cycle.without_rider",
    "construction_vehicle": "vehicle.parked",
    "bicycle": "cycle.without_rider",
    "barrier": "",
    "traffic_cone": "",
}

# Predefined splits -> the version suffix the devkit insists on (mirrors nuscenes.eval.common.loaders).
_SPLIT_VERSION = {
    "train": "trainval", "val": "trainval", "train_detect": "trainval", "train_track": "trainval",
    "mini_train": "mini", "mini_val": "mini", "test": "test",
}


# ----------------------------------------------------------------------------- transforms


def lidar_to_global(T_global_ego: np.ndarray, T_ego_lidar: np.ndarray) -> np.ndarray:
    """``T_global_lidar = T_global_ego @ T_ego_lidar`` (both 4x4), checked for shape and finiteness."""
    T_global_ego = np.asarray(T_global_ego, dtype=np.float64)
    T_ego_lidar = np.asarray(T_ego_lidar, dtype=np.float64)
    if T_global_ego.shape != (4, 4) or T_ego_lidar.shape != (4, 4):
        raise ValueError(f"transforms must be 4x4, got {T_global_ego.shape} and {T_ego_lidar.shape}")
    out = T_global_ego @ T_ego_lidar
    if not np.all(np.isfinite(out)):
        raise ValueError("non-finite LiDAR->global transform")
    return out


def sample_lidar_to_global(nusc, sample_token: str) -> np.ndarray:
    """``T_global_lidar`` of a sample's LIDAR_TOP keyframe, from the devkit's calibrated_sensor and ego_pose
    records (the same poses ``add_center_dist`` uses)."""
    return sample_data_to_global(nusc, nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])


def sample_data_to_global(nusc, sample_data_token: str) -> np.ndarray:
    """``T_global_sensor`` of any sample_data record (a keyframe or a sweep between keyframes)."""
    sd = nusc.get("sample_data", sample_data_token)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return lidar_to_global(make_transform(pose["rotation"], pose["translation"]),
                           make_transform(cs["rotation"], cs["translation"]))


# ----------------------------------------------------------------------------- submission


def attribute_name_for(label: str, attribute_index: int, speed: float | None = None) -> str:
    """A devkit attribute name valid for ``label``: the predicted one when the class can carry it, else
    the class default ('' for classes without attributes)."""
    allowed = CLASS_ATTRIBUTES.get(label, ())
    if not allowed:
        return ""
    if 0 <= int(attribute_index) < len(ATTRIBUTES) and ATTRIBUTES[int(attribute_index)] in allowed:
        return ATTRIBUTES[int(attribute_index)]
    if speed is not None and speed > 0.2 and label in ("car", "truck", "bus", "trailer", "construction_vehicle"):
        return "vehicle.moving"
    return DEFAULT_ATTRIBUTE.get(label, "")


def detections_to_submission_boxes(sample_token: str, detections: Detections, T_global_lidar: np.ndarray,
                                   max_boxes: int = MAX_BOXES_PER_SAMPLE) -> list[dict]:
    """One sample's LiDAR-frame detections -> the devkit's per-box dicts in the global frame.

    Boxes with non-finite values, non-positive sizes or labels outside the 10 classes are dropped (the
    devkit asserts on them); at most ``max_boxes`` of the highest scores are kept.
    """
    boxes = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 9)
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(detections.labels).reshape(-1).astype(np.int64)
    attrs = np.asarray(detections.attributes).reshape(-1).astype(np.int64) if len(detections.attributes) \
        else np.full(len(scores), -1, np.int64)
    if not (len(boxes) == len(scores) == len(labels) == len(attrs)):
        raise ValueError(f"detections of sample {sample_token} have mismatched lengths: boxes {len(boxes)}, "
                         f"scores {len(scores)}, labels {len(labels)}, attributes {len(attrs)}")
    valid = (np.all(np.isfinite(boxes[:, :7]), axis=1) & np.isfinite(scores)
             & np.all(boxes[:, 3:6] > 0, axis=1) & (labels >= 0) & (labels < len(DETECTION_CLASSES)))
    order = np.argsort(-scores[valid], kind="stable")[:max_boxes]
    idx = np.flatnonzero(valid)[order]
    if len(idx) == 0:
        return []
    box_global = transform_boxes(T_global_lidar, np.nan_to_num(boxes[idx], nan=0.0))
    out = []
    for k, row in zip(idx, box_global):
        label = DETECTION_CLASSES[int(labels[k])]
        fields = box_to_nuscenes(row)
        out.append({
            "sample_token": sample_token,
            "translation": fields["translation"],
            "size": fields["size"],
            "rotation": fields["rotation"],
            "velocity": fields["velocity"],
            "detection_name": label,
            "detection_score": float(scores[k]),
            "attribute_name": attribute_name_for(label, int(attrs[k]), float(np.hypot(*row[7:9]))),
        })
    return out


def default_meta(modality: str = "fusion") -> dict:
    """The submission's ``meta`` block for a model modality (fusion | lidar | camera)."""
    return {"use_camera": modality in ("fusion", "camera"), "use_lidar": modality in ("fusion", "lidar"),
            "use_radar": False, "use_map": False, "use_external": False}


def build_submission(sample_tokens: Iterable[str], detections: Mapping[str, Detections],
                     transforms: Mapping[str, np.ndarray], meta: dict | None = None,
                     max_boxes: int = MAX_BOXES_PER_SAMPLE) -> dict:
    """The nuScenes submission dict for exactly ``sample_tokens``.

    ``detections[token]`` are LiDAR-frame detections (a token absent from it gets an empty list: no
    detections), ``transforms[token]`` its ``T_global_lidar``. Detections for tokens outside
    ``sample_tokens`` are an error: a submission must match the eval set exactly.
    """
    tokens = list(dict.fromkeys(sample_tokens))
    extra = set(detections) - set(tokens)
    if extra:
        raise ValueError(f"{len(extra)} detection sample token(s) are not in the eval set, "
                         f"e.g. {sorted(extra)[0]}")
    results: dict[str, list[dict]] = {}
    for token in tokens:
        det = detections.get(token)
        if det is None or len(det) == 0:
            results[token] = []
            continue
        if token not in transforms:
            raise ValueError(f"no LiDAR->global transform for sample {token}")
        results[token] = detections_to_submission_boxes(token, det, transforms[token], max_boxes)
    return {"meta": dict(meta or default_meta()), "results": results}


def write_submission(path: str | Path, submission: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(submission))
    return path


# ----------------------------------------------------------------------------- eval set


def split_scene_names(nusc, eval_set: str) -> list[str]:
    """Scene names of a predefined split (checked against the dataset version the way the devkit's
    ``load_gt`` asserts it, but as a :class:`UserError`) or of a custom split in
    ``<dataroot>/<version>/splits.json``."""
    from nuscenes.utils.splits import create_splits_scenes, get_scenes_of_custom_split, is_predefined_split

    version = str(nusc.version)
    if is_predefined_split(eval_set):
        need = _SPLIT_VERSION.get(eval_set)
        if need is None:
            raise UserError(f"eval set {eval_set!r} cannot be evaluated by the devkit (use one of "
                            f"{', '.join(sorted(_SPLIT_VERSION))} or a custom split)")
        if not version.endswith(need):
            raise UserError(f"eval set {eval_set!r} needs a v1.0-{need} dataset, but the dataset is {version}")
        return list(create_splits_scenes()[eval_set])
    try:
        return list(get_scenes_of_custom_split(eval_set, nusc))
    except (ValueError, OSError, json.JSONDecodeError, AssertionError) as err:
        raise UserError(f"eval set {eval_set!r} is neither a predefined nuScenes split nor a custom split "
                        f"of {version}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def eval_sample_tokens(nusc, eval_set: str) -> list[str]:
    """The sample tokens the devkit evaluates for ``eval_set``, in database order. A split with no
    sample in this dataset is a :class:`UserError` (the wrong split for these scenes)."""
    names = set(split_scene_names(nusc, eval_set))
    tokens = [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in names]
    if not tokens:
        have = sorted({scene["name"] for scene in nusc.scene})
        raise UserError(f"eval set {eval_set!r} has no scene in this {nusc.version} dataset "
                        f"(its scenes: {', '.join(have[:6])}{' ...' if len(have) > 6 else ''})")
    return tokens


def infer_eval_set(nusc) -> str:
    """The eval set when the user gives none: ``nuscenes_io.eval_set_for`` (the predefined devkit split that
    holds the dataset's scenes), else a custom split of ``<dataroot>/<version>/splits.json`` that covers
    them (held-out-looking names first), else a predefined split of the version that does."""
    try:
        from bevfusion_ros.data import nuscenes_io  # type: ignore
        fn = getattr(nuscenes_io, "eval_set_for", None)
    except ImportError:
        fn = None
    if fn is not None:
        try:
            value = fn(nusc)
        except UserError:   # no predefined split holds these scenes: try custom splits below
            value = None
        if value:
            return str(value)
    by_version = {"mini": ["mini_val", "mini_train"], "trainval": ["val", "train"], "test": ["test"]}
    suffix = next((k for k in by_version if str(nusc.version).endswith(k)), None)
    options = list(by_version.get(suffix, []))
    custom = Path(nusc.dataroot) / str(nusc.version) / "splits.json"
    if custom.is_file():  # custom splits (devkit >= 1.2): held-out-looking names first
        try:
            names = [str(k) for k in json.loads(custom.read_text())]
        except (OSError, ValueError):
            names = []
        options = sorted(names, key=lambda n: (not any(w in n for w in ("val", "test", "heldout")), n)) + options
    scene_names = {scene["name"] for scene in nusc.scene}
    for name in options:
        try:
            if scene_names & set(split_scene_names(nusc, name)):
                return name
        except UserError:
            continue
    raise UserError(f"cannot infer an eval set for the scenes of this {nusc.version} dataset; pass --eval-set")


# ----------------------------------------------------------------------------- devkit evaluation


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def empty_metrics() -> dict:
    """The metrics of a submission without a single box (the devkit cannot filter an empty EvalBoxes)."""
    return {
        "map": 0.0, "nds": 0.0,
        "per_class_ap": {name: 0.0 for name in DETECTION_CLASSES},
        "per_class_ap_by_distance": {name: {} for name in DETECTION_CLASSES},
        "tp_errors": {name: 1.0 for name in TP_ERROR_NAMES},
        "per_class_tp_errors": {name: {tp: None for tp in TP_ERROR_NAMES} for name in DETECTION_CLASSES},
        "num_pred_boxes": 0,
    }


def _restrict(evaluator, sample_tokens: Iterable[str]) -> None:
    """Keep only ``sample_tokens`` in a constructed ``DetectionEval`` (its boxes are ``EvalBoxes``, a dict of
    lists per sample token); a token outside its eval set is an error."""
    keep = list(dict.fromkeys(sample_tokens))
    unknown = [t for t in keep if t not in set(evaluator.gt_boxes.sample_tokens)]
    if unknown:
        raise ValueError(f"{len(unknown)} sample token(s) to score are not in the eval set, e.g. {unknown[0]}")
    for boxes in (evaluator.gt_boxes, evaluator.pred_boxes):
        kept = {t: boxes.boxes[t] for t in keep}
        boxes.boxes.clear()
        boxes.boxes.update(kept)
    evaluator.sample_tokens = evaluator.gt_boxes.sample_tokens


# (nusc, eval set, filtered ground truth) of the last DetectionEval built: replay-eval scores three
# submissions of the same eval set, and loading the ground truth is most of a DetectionEval's set-up
# (on real nuScenes val, ~140k annotations through nusc.get)
_GROUND_TRUTH: list = [None, None, None]


def _copy_boxes(boxes):
    from nuscenes.eval.common.data_classes import EvalBoxes
    copy = EvalBoxes()
    copy.boxes = defaultdict(list, {token: list(items) for token, items in boxes.boxes.items()})
    return copy


def _evaluator(nusc, cfg, result_path: Path, eval_set: str, out_dir: Path, verbose: bool):
    """The devkit's ``DetectionEval`` for ``result_path``, its ground truth reused from the previous one
    of the same ``nusc`` and eval set: what ``DetectionEval.__init__`` does for the predictions (load,
    centre distances, range filter), with a copy of the ground truth it built then (``_restrict``
    narrows its own copy)."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.utils.splits import is_predefined_split

    cached_nusc, cached_set, cached_gt = _GROUND_TRUTH
    if cached_nusc is not nusc or cached_set != eval_set or not is_predefined_split(split_name=eval_set):
        evaluator = DetectionEval(nusc, config=cfg, result_path=str(result_path), eval_set=eval_set,
                                  output_dir=str(out_dir), verbose=verbose)
        _GROUND_TRUTH[:] = [nusc, eval_set, _copy_boxes(evaluator.gt_boxes)]
        return evaluator
    evaluator = DetectionEval.__new__(DetectionEval)
    evaluator.nusc, evaluator.cfg, evaluator.verbose = nusc, cfg, verbose
    evaluator.result_path, evaluator.eval_set, evaluator.output_dir = str(result_path), eval_set, str(out_dir)
    evaluator.plot_dir = str(out_dir / "plots")
    Path(evaluator.plot_dir).mkdir(parents=True, exist_ok=True)
    pred_boxes, evaluator.meta = load_prediction(str(result_path), cfg.max_boxes_per_sample, DetectionBox,
                                                 verbose=verbose)
    if set(pred_boxes.sample_tokens) != set(cached_gt.sample_tokens):
        raise AssertionError("Samples in split doesn't match samples in predictions.")   # as the devkit says
    evaluator.pred_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, pred_boxes), cfg.class_range,
                                             verbose=verbose)
    evaluator.gt_boxes = _copy_boxes(cached_gt)
    evaluator.sample_tokens = evaluator.gt_boxes.sample_tokens
    return evaluator


def evaluate_submission(nusc, result_path: str | Path, eval_set: str, out_dir: str | Path,
                        verbose: bool = False, sample_tokens: Iterable[str] | None = None) -> dict:
    """Run the devkit's ``DetectionEval`` on a submission file and return plain, JSON-safe metrics:
    ``map``, ``nds``, ``per_class_ap``, ``tp_errors`` (mATE...), ``per_class_tp_errors``, plus
    ``map_present_classes`` (mean AP over the classes with ground truth in the eval set: a synthetic
    dataset need not have all 10).

    ``sample_tokens``: score only these samples of the eval set (ground truth and predictions of the
    others set aside after the devkit has loaded and filtered them), e.g. the keyframes a real-time run
    produced outputs for. The submission must still cover the whole eval set, as the devkit requires."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    eval_sample_tokens(nusc, eval_set)  # UserError on a split/version mismatch before the devkit asserts
    result_path = Path(result_path)
    submission = json.loads(result_path.read_text())
    n_boxes = sum(len(v) for v in submission.get("results", {}).values())
    if n_boxes == 0:
        return empty_metrics()
    cfg = config_factory(DETECTION_CONFIG)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import contextlib
    import io
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO())  # devkit tqdm bars
    with quiet:
        evaluator = _evaluator(nusc, cfg, result_path, eval_set, out_dir, verbose)
        if sample_tokens is not None:
            _restrict(evaluator, sample_tokens)
        if sum(len(evaluator.pred_boxes[t]) for t in evaluator.sample_tokens) == 0:
            return empty_metrics()
        metrics, _ = evaluator.evaluate()
    summary = metrics.serialize()
    gt_classes = {box.detection_name for token in evaluator.gt_boxes.sample_tokens
                  for box in evaluator.gt_boxes[token]}
    per_class_ap = {name: float(summary["mean_dist_aps"][name]) for name in DETECTION_CLASSES}
    present = [per_class_ap[name] for name in DETECTION_CLASSES if name in gt_classes]
    result = {
        "map": float(summary["mean_ap"]),
        "nds": float(summary["nd_score"]),
        "per_class_ap": per_class_ap,
        "per_class_ap_by_distance": {name: {str(k): float(v) for k, v in summary["label_aps"][name].items()}
                                     for name in DETECTION_CLASSES},
        "tp_errors": {name: _finite(summary["tp_errors"][name]) for name in TP_ERROR_NAMES},
        "per_class_tp_errors": {name: {tp: _finite(summary["label_tp_errors"][name][tp]) for tp in TP_ERROR_NAMES}
                                for name in DETECTION_CLASSES},
        "map_present_classes": float(np.mean(present)) if present else 0.0,
        "gt_classes": sorted(gt_classes, key=DETECTION_CLASSES.index),
        "num_pred_boxes": int(n_boxes),
    }
    (out_dir / "detection_metrics.json").write_text(json.dumps(result, indent=2))
    return result
