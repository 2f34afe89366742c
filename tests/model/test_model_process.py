"""The model in a child process (runtime/model_process.py) is the same model, and survives its faults."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from model_helpers import TINY, make_frame

from bevfusion_ros.errors import UserError
from bevfusion_ros.paths import REPO_ROOT
from bevfusion_ros.runtime.model_process import ModelProcess, ModelProcessConfig, ModelProcessDied
from bevfusion_ros.runtime.pipeline import PerceptionPipeline

CHECKPOINT = REPO_ROOT / "models" / "bevfusion-tiny-synthetic.pt"


@pytest.fixture(scope="module")
def child():
    process = ModelProcess(ModelProcessConfig(str(TINY), str(CHECKPOINT), num_threads=1))
    yield process
    process.close()


def test_the_child_computes_what_the_pipeline_computes_in_process(child):
    frame = make_frame(num_points=6000, seed=3, masked=("CAM_BACK",), image_hw=(225, 400))
    local = PerceptionPipeline(str(TINY), str(CHECKPOINT)).infer(frame)
    remote = child.infer(frame)
    assert len(remote.detections) == len(local.detections) > 0
    np.testing.assert_allclose(remote.detections.boxes, local.detections.boxes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(remote.bev_map.probs, local.bev_map.probs, atol=1e-6)
    assert remote.timings_ms["transfer"] >= 0 and remote.timings_ms["total"] > 0
    assert 0 < remote.timings_ms["cpu"] < 60_000     # the child's CPU time for the frame, beside wall time
    assert child.plan_rebuilds >= 1


def test_a_bad_frame_is_the_callers_error_and_the_child_keeps_serving(child):
    frame = make_frame(num_points=100, image_hw=(225, 400))
    frame.cameras = frame.cameras[:2]
    with pytest.raises(UserError, match="frame has 2 cameras"):
        child.infer(frame)
    assert len(child.infer(make_frame(num_points=500, image_hw=(225, 400))).detections) >= 0
    assert child.restarts == 0


def test_a_killed_child_is_replaced_on_the_next_frame(child):
    frame = make_frame(num_points=500, image_hw=(225, 400))
    first_pid = child.pid
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while child._proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    result = child.infer(frame)
    assert child.restarts == 1 and child.pid != first_pid
    assert result.bev_map is not None


def test_close_ends_the_child():
    process = ModelProcess(ModelProcessConfig(str(TINY), str(CHECKPOINT), num_threads=1))
    proc = process._proc
    process.close()
    assert proc.poll() is not None and process.pid is None


def test_a_missing_checkpoint_is_a_user_error_at_start():
    with pytest.raises(UserError, match="checkpoint"):
        ModelProcess(ModelProcessConfig(str(TINY), "/nonexistent/weights.pt", num_threads=1))


def test_a_child_that_does_not_answer_in_time_is_killed_and_replaced():
    process = ModelProcess(ModelProcessConfig(str(TINY), str(CHECKPOINT), num_threads=1, reply_timeout_s=0.001))
    try:
        first = process._proc
        with pytest.raises(ModelProcessDied, match="did not answer"):
            process.infer(make_frame(num_points=500, image_hw=(225, 400)))
        assert first.poll() is not None                   # killed, not left running
        process.config.reply_timeout_s = 60.0
        assert process.infer(make_frame(num_points=500, image_hw=(225, 400))).bev_map is not None
        assert process.restarts == 1
    finally:
        process.close()


def test_the_child_runs_numpy_blas_single_threaded(child):
    """numpy's OpenBLAS threads would only busy-wait in the child (its products are tiny), burning a core
    the node needs; the child starts with OPENBLAS_NUM_THREADS=1 unless the user set it."""
    environ = open(f"/proc/{child.pid}/environ", "rb").read().split(b"\0")
    assert b"OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "1").encode() in environ


def test_the_child_sends_the_detections_ahead_of_the_result(child):
    frame = make_frame(num_points=6000, seed=3, image_hw=(225, 400))
    seen = []
    result = child.infer(frame, on_detections=seen.append)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0].boxes, result.detections.boxes)
    assert result.bev_map is not None


def test_a_failing_detections_callback_is_raised_after_the_result_is_read(child):
    # the stream stays in step: the next frame gets its own answer
    def broken(detections):
        raise ValueError("publisher gone")
    restarts = child.restarts
    with pytest.raises(ValueError, match="publisher gone"):
        child.infer(make_frame(num_points=500, image_hw=(225, 400)), on_detections=broken)
    frame = make_frame(num_points=6000, seed=4, image_hw=(225, 400))
    again = child.infer(frame)
    assert len(again.detections) == len(PerceptionPipeline(str(TINY), str(CHECKPOINT)).infer(frame).detections)
    assert child.restarts == restarts


def test_cameras_sent_after_the_frame_give_the_same_answer(child):
    import dataclasses
    frame = make_frame(num_points=6000, seed=3, masked=("CAM_BACK",), image_hw=(225, 400))
    whole = child.infer(frame)
    late = dataclasses.replace(frame, cameras=[])
    result = child.infer(late, cameras=lambda: frame.cameras)
    assert late.cameras is frame.cameras
    np.testing.assert_array_equal(result.detections.boxes, whole.detections.boxes)
    np.testing.assert_array_equal(result.bev_map.probs, whole.bev_map.probs)


def test_a_failure_to_produce_the_cameras_or_a_bad_frame_keeps_the_stream_in_step(child):
    import dataclasses
    frame = make_frame(num_points=500, image_hw=(225, 400))
    restarts = child.restarts

    def broken():
        raise OSError("decoder gone")
    with pytest.raises(OSError, match="decoder gone"):
        child.infer(dataclasses.replace(frame, cameras=[]), cameras=broken)
    bad = dataclasses.replace(frame, points=np.zeros((10, 2), np.float32), cameras=[])
    with pytest.raises(UserError, match="bad frame"):          # fails before it needs its cameras
        child.infer(bad, cameras=lambda: frame.cameras)
    assert child.infer(dataclasses.replace(frame, cameras=[]), cameras=lambda: frame.cameras).bev_map is not None
    assert child.restarts == restarts
