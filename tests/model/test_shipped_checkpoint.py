"""The shipped checkpoint models/bevfusion-tiny-synthetic.pt: loads with weights_only=True, matches the tiny
config, and detects the objects of a freshly generated synthetic frame (a seed never used in training).

Generating one synthetic keyframe takes a few seconds; the scene is made once per session."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bevfusion_ros.geometry import box_corners
from bevfusion_ros.paths import REPO_ROOT
from bevfusion_ros.runtime.pipeline import PerceptionPipeline

from model_helpers import TINY

CHECKPOINT = REPO_ROOT / "models" / "bevfusion-tiny-synthetic.pt"
FRESH_SEED = 9_000_123        # disjoint from the training seeds in models/README.md

pytestmark = pytest.mark.skipif(not CHECKPOINT.is_file(), reason="shipped checkpoint not present")


def bev_iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon
    pa, pb = Polygon(box_corners(a[None])[0, :4, :2]), Polygon(box_corners(b[None])[0, :4, :2])
    inter = pa.intersection(pb).area
    return inter / max(pa.area + pb.area - inter, 1e-9)


@pytest.fixture(scope="module")
def fresh_sample(tmp_path_factory):
    from bevfusion_ros.data.dataset import frame_from_sample, sample_boxes_lidar
    from bevfusion_ros.data.nuscenes_io import open_nuscenes
    from bevfusion_ros.data.synth.generate import SynthConfig, generate
    root = tmp_path_factory.mktemp("fresh_synth")
    generate(SynthConfig(out=root, splits=[("val", 1)], seed=FRESH_SEED, keyframes=2, camera_hz=2,
                         semantic=False, progress=False))
    nusc = open_nuscenes(root)
    token = nusc.sample[-1]["token"]
    return frame_from_sample(nusc, token, sweeps=3), sample_boxes_lidar(nusc, token)


def test_checkpoint_loads_with_weights_only_and_is_small():
    payload = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert payload["config"]["name"] == "bevfusion-tiny"
    assert CHECKPOINT.stat().st_size < 25 * 1024 * 1024
    assert "train_seconds" in payload["metadata"]


def test_detects_objects_of_a_fresh_synthetic_frame(fresh_sample):
    frame, (gt_boxes, gt_labels, _attrs) = fresh_sample
    pipeline = PerceptionPipeline(TINY, CHECKPOINT, score_threshold=0.3)
    result = pipeline.infer(frame)
    det = result.detections
    near = np.hypot(gt_boxes[:, 0], gt_boxes[:, 1]) < 30
    cars = np.nonzero(near & (gt_labels == 0))[0]
    assert len(cars) > 0 and len(det) > 0
    matched = 0
    for i in cars:
        same = np.nonzero(det.labels == 0)[0]
        if len(same) and max(bev_iou(gt_boxes[i], det.boxes[j]) for j in same) > 0.3:
            matched += 1
    assert matched / len(cars) >= 0.5, f"only {matched} of {len(cars)} nearby cars found with BEV IoU > 0.3"


def test_empty_scene_gives_no_detections(fresh_sample):
    frame, _ = fresh_sample
    pipeline = PerceptionPipeline(TINY, CHECKPOINT, score_threshold=0.3)
    empty = type(frame)(stamp_us=frame.stamp_us, points=frame.points[:0], cameras=[
        type(c)(c.name, None, c.intrinsic, c.T_lidar_cam) for c in frame.cameras])
    result = pipeline.infer(empty)
    assert len(result.detections) == 0


def test_lidar_only_fallback_still_detects(fresh_sample):
    frame, (gt_boxes, gt_labels, _attrs) = fresh_sample
    pipeline = PerceptionPipeline(TINY, CHECKPOINT, score_threshold=0.3)
    masked = type(frame)(stamp_us=frame.stamp_us, points=frame.points, cameras=[
        type(c)(c.name, None, c.intrinsic, c.T_lidar_cam) for c in frame.cameras])
    result = pipeline.infer(masked)
    assert (result.detections.labels == 0).sum() > 0


def test_moving_objects_get_their_velocity_from_the_sweeps_and_heading_from_their_motion(fresh_sample):
    """The tiny config measures velocity from the 3 sweeps' points (model/motion.py; its accuracy is specified
    in test_motion.py and measured in models/README.md) and points boxes moving >= 1 m/s where they go.
    Here: the wiring, on a real network output. The head alone predicts ~0 m/s for everything."""
    frame, (gt_boxes, gt_labels, _attrs) = fresh_sample
    pipeline = PerceptionPipeline(TINY, CHECKPOINT)
    config = pipeline.config.detection
    assert config.point_velocity.enabled and config.heading_from_velocity == 1.0
    det = pipeline.infer(frame).detections
    close = 0
    for box, label in zip(gt_boxes, gt_labels):
        if np.hypot(*box[7:9]) < 2.0:
            continue
        same = np.nonzero(det.labels == label)[0]
        if len(same):
            dist = np.hypot(*(det.boxes[same, :2] - box[:2]).T)
            found = det.boxes[same[dist.argmin()]]
            close += bool(dist.min() < 1.5 and np.hypot(*(found[7:9] - box[7:9])) < 1.0)
    assert close >= 2, "moving objects should be found with their measured velocity"
    speed = np.hypot(det.boxes[:, 7], det.boxes[:, 8])
    moving = det.boxes[speed >= 1.0]
    assert len(moving) >= 2
    np.testing.assert_allclose(np.cos(moving[:, 6] - np.arctan2(moving[:, 8], moving[:, 7])), 1.0, atol=1e-5)


def test_parallel_branches_give_the_sequential_answer_and_the_same_errors(fresh_sample):
    """parallel_branches moves camera preprocessing, the camera branch and the map raster to a second
    thread: the same detections and map, masked cameras and an empty cloud included, and a bad image is
    still the caller's UserError."""
    from bevfusion_ros.errors import UserError

    frame, _ = fresh_sample
    sequential = PerceptionPipeline(TINY, CHECKPOINT, score_threshold=0.3)
    parallel = PerceptionPipeline(TINY, CHECKPOINT, score_threshold=0.3, parallel_branches=True)
    masked = type(frame)(stamp_us=frame.stamp_us, points=frame.points, cameras=[
        type(c)(c.name, None, c.intrinsic, c.T_lidar_cam) if i % 2 else c for i, c in enumerate(frame.cameras)])
    empty = type(frame)(stamp_us=frame.stamp_us, points=frame.points[:0], cameras=frame.cameras)
    for case in (frame, masked, empty, frame):
        want, got = sequential.infer(case), parallel.infer(case)
        np.testing.assert_array_equal(got.detections.boxes, want.detections.boxes)
        np.testing.assert_array_equal(got.detections.labels, want.detections.labels)
        np.testing.assert_array_equal(got.bev_map.probs, want.bev_map.probs)
    assert {"preprocess_camera", "camera_encoder", "bev_pool", "map_raster", "branch_wait", "map_head"} \
        <= set(got.timings_ms)
    broken = type(frame)(stamp_us=frame.stamp_us, points=frame.points, cameras=[
        type(c)(c.name, np.zeros((10, 10), np.uint8), c.intrinsic, c.T_lidar_cam) for c in frame.cameras])
    with pytest.raises(UserError, match="bad frame"):
        parallel.infer(broken)
    np.testing.assert_array_equal(parallel.infer(frame).detections.boxes, want.detections.boxes)
