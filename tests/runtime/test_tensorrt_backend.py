"""TensorRT back-end up to TensorRT: selection errors, calibration-data recording and splitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.runtime import trt_builder
from bevfusion_ros.runtime.backend import make_backend
from bevfusion_ros.runtime.tensorrt_backend import RecordingBackend, record_backend_inputs, split_calibration_inputs

from .conftest import toy_inputs  # noqa: E402


def test_module_imports_without_tensorrt():
    import importlib
    mod = importlib.import_module("bevfusion_ros.runtime.tensorrt_backend")
    assert hasattr(mod, "TensorRTBackend")


@pytest.mark.skipif(trt_builder.tensorrt_available(), reason="TensorRT is installed here")
def test_selecting_tensorrt_without_it_is_one_clear_error(toy_model, tmp_path):
    with pytest.raises(UserError) as info:
        make_backend("tensorrt", toy_model, precision="int8", cache_dir=tmp_path)
    msg = str(info.value)
    assert "tensorrt" in msg and "\n" not in msg
    assert not any(tmp_path.iterdir())          # nothing exported or built before the check


def test_recording_backend_collects_calibration_samples(toy_model):
    ref = make_backend("torch", toy_model)
    rec = RecordingBackend(ref, limit=2)
    x = toy_inputs(toy_model)
    for _ in range(3):
        d, f = rec.run_camera_encoder(x["images"], x["lidar_depth"])
        out = rec.run_bev_head(x["lidar_bev"], x["camera_bev"])
    assert len(rec.samples) == 2
    assert set(rec.samples[0]) == {"images", "lidar_depth", "lidar_bev", "camera_bev"}
    assert torch.equal(rec.samples[0]["images"], x["images"])
    assert set(out) == set(toy_model.output_names)
    parts = list(split_calibration_inputs(rec.samples, ("images", "lidar_depth")))
    assert len(parts) == 2 and set(parts[0]) == {"images", "lidar_depth"}
    batches = list(trt_builder.CalibrationBatcher(parts, batch_size=1))
    assert batches[0]["images"].shape == tuple(x["images"].shape) and batches[0]["images"].dtype == np.float32


def test_record_backend_inputs_restores_pipeline_backend(toy_model):
    x = toy_inputs(toy_model)

    class FakePipeline:
        def __init__(self):
            self.backend = make_backend("torch", toy_model)

        def infer(self, frame):
            self.backend.run_camera_encoder(x["images"] * frame, x["lidar_depth"])
            return self.backend.run_bev_head(x["lidar_bev"], x["camera_bev"])

    pipe = FakePipeline()
    original = pipe.backend
    samples = record_backend_inputs(pipe, [1.0, 2.0, 3.0], limit=2)
    assert len(samples) == 2 and pipe.backend is original
    assert torch.allclose(samples[1]["images"], x["images"] * 2.0)
