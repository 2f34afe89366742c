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


def test_tensorrt_backend_glue_with_a_stand_in(fake_trt, toy_model, tmp_path):
    """The whole TensorRTBackend path (export -> build -> deserialize -> bind raw tensor addresses ->
    execute) against the TensorRT stand-in, whose "engines" run the ONNX with onnxruntime: outputs match
    torch, a missing lidar_depth is fed as zeros, a second construction hits the engine cache, INT8
    calibrates each part from recorded inputs, and a wrong shape is a clear error."""
    kwargs = dict(device="cpu", cache_dir=tmp_path / "engines", onnx_cache_dir=tmp_path / "onnx")
    backend = make_backend("tensorrt", toy_model, precision="fp16", **kwargs)
    assert backend.name == "tensorrt" and set(backend.engine_paths) == {"camera_encoder", "bev_head"}
    ref = make_backend("torch", toy_model)
    x = toy_inputs(toy_model)
    for depth in (x["lidar_depth"], None):
        for g, w in zip(backend.run_camera_encoder(x["images"], depth), ref.run_camera_encoder(x["images"], depth)):
            assert g.shape == w.shape and (g - w).abs().max().item() <= 1e-3
    got, want = backend.run_bev_head(x["lidar_bev"], x["camera_bev"]), ref.run_bev_head(x["lidar_bev"], x["camera_bev"])
    assert list(got) == list(toy_model.output_names)
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-3
    builds = len(fake_trt.builds)
    make_backend("tensorrt", toy_model, precision="fp16", **kwargs)
    assert len(fake_trt.builds) == builds                        # engines from the cache
    with pytest.raises(ValueError, match="engine expects"):
        backend.run_bev_head(x["lidar_bev"][..., :4], x["camera_bev"])
    rec = RecordingBackend(ref)
    for _ in range(3):
        rec.run_camera_encoder(x["images"], x["lidar_depth"])
        rec.run_bev_head(x["lidar_bev"], x["camera_bev"])
    make_backend("tensorrt", toy_model, precision="int8", calibration_inputs=rec.samples,
                 calibration_cache_dir=tmp_path / "calib", **kwargs)
    assert [b["served"] for b in fake_trt.builds[-2:]] == [3, 3]
    assert len(list((tmp_path / "calib").glob("*.calib"))) == 2
