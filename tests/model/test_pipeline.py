"""PerceptionPipeline behaviour: cached bev_pool plan, fallbacks (empty cloud, masked cameras) and bad
inputs (missing/corrupt checkpoint, config mismatch, wrong shapes) as clear UserErrors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import Frame
from bevfusion_ros.model.bevfusion import BEVFusion
from bevfusion_ros.model.checkpoint import save_checkpoint
from bevfusion_ros.model.config import load_config
from bevfusion_ros.runtime.backend import Backend, TorchBackend, make_backend
from bevfusion_ros.runtime.pipeline import PerceptionPipeline

from model_helpers import TINY, make_frame


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    config = load_config(TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, BEVFusion(config), config, {"note": "random weights"})
    return path


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint):
    return PerceptionPipeline(TINY, tiny_checkpoint, backend="torch", score_threshold=0.3)


def test_plan_is_built_once_and_rebuilt_only_when_calibration_changes(pipeline):
    frame = make_frame(2000, seed=1)
    before = pipeline.plan_rebuilds
    pipeline.infer(frame)
    pipeline.infer(make_frame(2500, seed=2))      # new points and images, same rig
    assert pipeline.plan_rebuilds == before + 1
    frame.cameras[0].T_lidar_cam = frame.cameras[0].T_lidar_cam.copy()
    frame.cameras[0].T_lidar_cam[0, 3] += 0.05
    result = pipeline.infer(frame)
    assert pipeline.plan_rebuilds == before + 2
    for stage in ("preprocess", "voxelize", "lidar_encoder", "map_raster", "camera_encoder", "bev_pool", "bev_head",
                  "postprocess", "total"):
        assert stage in result.timings_ms


def test_all_cameras_masked_runs_lidar_only(pipeline):
    masked = make_frame(2000, seed=3, masked=tuple(c.name for c in make_frame(10).cameras))
    result = pipeline.infer(masked)
    assert result.bev_map is not None and result.bev_map.probs.shape == (6, 200, 200)
    assert np.isfinite(result.bev_map.probs).all()
    # masking is a zeroing of camera features: the images of masked cameras cannot matter
    masked_other = make_frame(2000, seed=3, masked=tuple(c.name for c in make_frame(10).cameras))
    again = pipeline.infer(masked_other)
    np.testing.assert_allclose(result.bev_map.probs, again.bev_map.probs, atol=1e-6)


def test_empty_point_cloud_still_runs(pipeline):
    frame = make_frame(0, seed=4)
    result = pipeline.infer(frame)
    assert result.bev_map is not None
    assert result.detections.boxes.shape[1] == 9


def test_points_with_wrong_shape_are_a_user_error(pipeline):
    frame = make_frame(100)
    frame.points = np.zeros((100, 3), np.float32)
    with pytest.raises(UserError, match="points"):
        pipeline.infer(frame)


def test_wrong_camera_count_and_bad_image_are_user_errors(pipeline):
    frame = make_frame(100)
    short = Frame(stamp_us=1, points=frame.points, cameras=frame.cameras[:4])
    with pytest.raises(UserError, match="cameras"):
        pipeline.infer(short)
    frame.cameras[1].image = np.zeros((10, 10), np.uint8)
    with pytest.raises(UserError, match="CAM_FRONT_RIGHT"):
        pipeline.infer(frame)


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        PerceptionPipeline(TINY, tmp_path / "nope.pt")


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="corrupt"):
        PerceptionPipeline(TINY, path)


def test_foreign_pickle_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "x", "obj": object.__new__(Frame)}, path)
    with pytest.raises(UserError):
        PerceptionPipeline(TINY, path)


def test_config_checkpoint_mismatch_is_a_user_error(tmp_path, tiny_checkpoint):
    other = tmp_path / "wide.yaml"
    other.write_text(TINY.read_text().replace("fuser_channels: 32", "fuser_channels: 48"))
    with pytest.raises(UserError, match="different model config.*fuser_channels"):
        PerceptionPipeline(other, tiny_checkpoint)


def test_make_backend_by_name(tiny_checkpoint):
    model = BEVFusion(load_config(TINY))
    assert isinstance(make_backend("torch", model), TorchBackend)
    with pytest.raises(UserError, match="unknown back-end"):
        make_backend("cuda-magic", model)
    assert issubclass(TorchBackend, Backend)


def test_a_cpu_pipeline_runs_numpy_blas_single_threaded(pipeline):
    """OpenBLAS's extra threads only busy-wait on the pipeline's tiny numpy products (runtime/pipeline.py)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


@pytest.mark.parametrize("parallel", [False, True])
def test_detections_are_handed_over_before_the_map_is_finished(tiny_checkpoint, parallel):
    # on_detections gets the result's detections once; with parallel_branches the map head (on the second
    # thread) may still be running then: here it is held until the callback has run
    import threading
    pipeline = PerceptionPipeline(TINY, tiny_checkpoint, backend="torch", score_threshold=0.0,
                                  parallel_branches=parallel)
    released = threading.Event()
    if parallel:
        head = pipeline.model.map_head.forward

        def held_map_head(*args, **kwargs):
            assert released.wait(30), "the map head was waited for before the detections were handed over"
            return head(*args, **kwargs)
        pipeline.model.map_head.forward = held_map_head
    seen = []

    def on_detections(detections):
        seen.append(detections)
        released.set()
    result = pipeline.infer(make_frame(num_points=3000, seed=5), on_detections=on_detections)
    assert len(seen) == 1 and seen[0] is result.detections
    assert result.bev_map is not None and 0 < result.timings_ms["detections"] <= result.timings_ms["total"]


@pytest.mark.parametrize("parallel", [False, True])
def test_cameras_handed_over_late_give_the_same_answer_and_are_fetched_once(tiny_checkpoint, parallel):
    # the node passes the frame without its cameras and a callable that finishes decoding them; the LiDAR
    # branch starts meanwhile. With parallel_branches the camera side calls it, on its own thread.
    import dataclasses
    import threading
    pipeline = PerceptionPipeline(TINY, tiny_checkpoint, backend="torch", score_threshold=0.0,
                                  parallel_branches=parallel)
    frame = make_frame(num_points=3000, seed=6, masked=("CAM_BACK",))
    whole = pipeline.infer(frame)
    late = dataclasses.replace(frame, cameras=[])
    calls = []

    def cameras():
        calls.append(threading.current_thread().name)
        return frame.cameras
    result = pipeline.infer(late, cameras=cameras)
    assert len(calls) == 1 and late.cameras is frame.cameras
    assert (calls[0] != threading.current_thread().name) == parallel
    np.testing.assert_array_equal(result.detections.boxes, whole.detections.boxes)
    np.testing.assert_array_equal(result.bev_map.probs, whole.bev_map.probs)
    assert "cameras_wait" in result.timings_ms or not parallel


@pytest.mark.parametrize("parallel", [False, True])
def test_late_cameras_are_still_fetched_when_the_frame_fails_or_are_wrong(tiny_checkpoint, parallel):
    import dataclasses
    pipeline = PerceptionPipeline(TINY, tiny_checkpoint, backend="torch", parallel_branches=parallel)
    frame = make_frame(num_points=500, seed=7)
    calls = []
    bad = dataclasses.replace(frame, points=np.zeros((10, 2), np.float32), cameras=[])
    with pytest.raises(UserError, match="bad frame"):
        pipeline.infer(bad, cameras=lambda: calls.append(1) or frame.cameras)
    assert calls == [1]                # whoever produces them is never left waiting
    with pytest.raises(UserError, match="frame has 2 cameras"):
        pipeline.infer(dataclasses.replace(frame, cameras=[]), cameras=lambda: frame.cameras[:2])
