"""TensorRT builder: everything up to TensorRT itself (cache keys, engine paths, calibration batching and
cache files, error paths). TensorRT is not installable on the development machines."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.runtime import trt_builder as tb


def test_cache_key_changes_with_each_input(tmp_path):
    a = tmp_path / "a.onnx"
    a.write_bytes(b"onnx-bytes-1")
    h1 = tb.onnx_hash(a)
    base = tb.engine_cache_key(h1, "10.3.0", "fp16", "NVIDIA H100 sm90")
    assert base == tb.engine_cache_key(h1, "10.3.0", "fp16", "NVIDIA H100 sm90")   # deterministic
    a.write_bytes(b"onnx-bytes-2")
    assert tb.engine_cache_key(tb.onnx_hash(a), "10.3.0", "fp16", "NVIDIA H100 sm90") != base
    assert tb.engine_cache_key(h1, "10.4.0", "fp16", "NVIDIA H100 sm90") != base
    assert tb.engine_cache_key(h1, "10.3.0", "int8", "NVIDIA H100 sm90") != base
    assert tb.engine_cache_key(h1, "10.3.0", "fp32", "NVIDIA H100 sm90") != base
    assert tb.engine_cache_key(h1, "10.3.0", "fp16", "NVIDIA A100 sm80") != base
    assert tb.engine_cache_key(h1, "10.3.0", "fp16", "NVIDIA H100 sm90", {"workspace_bytes": 1}) != base
    assert tb.engine_cache_key(h1, "10.3.0", "half", "NVIDIA H100 sm90") == base           # alias


def test_onnx_hash_includes_external_data(tmp_path):
    a = tmp_path / "m.onnx"
    a.write_bytes(b"graph")
    h = tb.onnx_hash(a)
    (tmp_path / "m.onnx.data").write_bytes(b"weights")
    assert tb.onnx_hash(a) != h
    assert tb.onnx_hash(b"graph") == __import__("hashlib").sha256(b"graph").hexdigest()
    with pytest.raises(UserError, match="not found"):
        tb.onnx_hash(tmp_path / "missing.onnx")


def test_engine_cache_lookup_and_staleness(tmp_path):
    key1 = tb.engine_cache_key("h1", "10.3.0", "fp16", "gpu")
    key2 = tb.engine_cache_key("h2", "10.3.0", "fp16", "gpu")
    assert tb.cached_engine(tmp_path, "bev_head", key1, "fp16") is None
    path = tb.engine_path(tmp_path, "bev_head", key1, "fp16")
    assert path.name == f"bev_head.fp16.{key1[:16]}.engine"
    path.write_bytes(b"plan")
    assert tb.cached_engine(tmp_path, "bev_head", key1, "fp16") is None        # no sidecar yet
    path.with_suffix(".json").write_text(__import__("json").dumps({"key": key1, "size": 4}))
    assert tb.cached_engine(tmp_path, "bev_head", key1, "fp16") == path
    path.write_bytes(b"truncated")                                               # size mismatch -> rebuild
    assert tb.cached_engine(tmp_path, "bev_head", key1, "fp16") is None
    assert tb.stale_engines(tmp_path, "bev_head", "fp16", key2) == [path]
    assert tb.stale_engines(tmp_path, "bev_head", "fp16", key1) == []
    assert tb.stale_engines(tmp_path, "bev_head", "int8", key2) == []


def test_precision_names():
    assert tb.normalize_precision("FP16") == "fp16"
    assert tb.normalize_precision("float32") == "fp32"
    with pytest.raises(UserError, match="unknown TensorRT precision"):
        tb.normalize_precision("int4")


def _frames(n, cams=2):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield {"images": torch.from_numpy(rng.normal(size=(1, cams, 3, 8, 16)).astype(np.float32)),
               "lidar_depth": rng.uniform(0, 50, (1, cams, 1, 8, 16)).astype(np.float64), "unused": None}


def test_calibration_batcher_groups_frames():
    frames = list(_frames(7))
    batches = list(tb.CalibrationBatcher(frames, batch_size=3))
    assert len(batches) == 2                                   # the 7th frame is an incomplete batch: dropped
    for b in batches:
        assert set(b) == {"images", "lidar_depth"}
        assert b["images"].shape == (3, 2, 3, 8, 16) and b["images"].dtype == np.float32
        assert b["lidar_depth"].dtype == np.float32 and b["images"].flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(batches[1]["images"][0], frames[3]["images"].numpy()[0])
    assert len(list(tb.CalibrationBatcher(_frames(20), batch_size=2, max_batches=4))) == 4
    # mismatched inputs are errors, not silent garbage
    bad = list(_frames(2))
    bad[1]["images"] = bad[1]["images"][:, :1]
    with pytest.raises(ValueError, match="shape"):
        list(tb.CalibrationBatcher(bad))
    bad = list(_frames(2))
    del bad[1]["lidar_depth"]
    with pytest.raises(ValueError, match="has inputs"):
        list(tb.CalibrationBatcher(bad))
    bad = list(_frames(1))
    bad[0]["images"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        list(tb.CalibrationBatcher(bad))


def test_calibrator_core_serves_batches_and_cache(tmp_path):
    batches = tb.CalibrationBatcher(_frames(4), batch_size=2)
    cache = tmp_path / "calib" / "camera_encoder.calib"
    core = tb.CalibratorCore(batches, cache, batch_size=2, device="cpu")
    assert core.get_batch_size() == 2
    assert core.read_calibration_cache() is None
    ptrs = core.get_batch(["lidar_depth", "images"])
    assert len(ptrs) == 2 and all(isinstance(p, int) and p != 0 for p in ptrs)
    assert ptrs[1] == core._buffers["images"].data_ptr()
    first = core._buffers["images"].clone()
    ptrs2 = core.get_batch(["lidar_depth", "images"])
    assert ptrs2 == ptrs                                        # buffers reused between batches
    assert not torch.equal(first, core._buffers["images"])      # ...with the new batch's data
    assert core.get_batch(["lidar_depth", "images"]) is None    # exhausted
    assert core.batches_served == 2
    core.write_calibration_cache(b"TRT-8601-EntropyCalibration2\nimages: 3c010a14\n")
    assert cache.read_bytes().startswith(b"TRT-")
    again = tb.CalibratorCore([], cache, device="cpu")
    assert again.read_calibration_cache() == cache.read_bytes()
    with pytest.raises(KeyError, match="lacks network input"):
        tb.CalibratorCore(tb.CalibrationBatcher(_frames(1)), cache, device="cpu").get_batch(["points"])


@pytest.mark.skipif(tb.tensorrt_available(), reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(UserError, match="needs the `tensorrt` Python package"):
        tb.build_engine(onnx, "fp16", cache_dir=tmp_path)
    with pytest.raises(UserError, match="tensorrt"):
        tb.make_entropy_calibrator([], tmp_path / "c.calib")
    with pytest.raises(UserError, match="tensorrt"):
        tb.load_engine(onnx)
    with pytest.raises(UserError, match="not found"):          # a missing ONNX is reported first
        tb.build_engine(tmp_path / "nope.onnx", "fp16", cache_dir=tmp_path)


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BEVFUSION_ENGINE_CACHE", str(tmp_path / "engines"))
    assert tb.default_cache_dir() == tmp_path / "engines"


# ----------------------------------------------------------------------------- build flow with a stand-in
# (the `fake_trt` fixture, tests/runtime/conftest.py)


def test_build_engine_flow_and_cache(fake_trt, tmp_path):
    onnx = tmp_path / "camera_encoder.onnx"
    onnx.write_bytes(b"ONNX:images,lidar_depth")
    cache = tmp_path / "engines"
    logs = []
    p16 = tb.build_engine(onnx, "fp16", cache, log=logs.append)
    assert p16.read_bytes() == b"PLAN:fp16" and fake_trt.builds[-1]["flags"] == ["fp16"]
    meta = json.loads(p16.with_suffix(".json").read_text())
    assert meta["tensorrt"] == "10.99.0-fake" and meta["device"] == "Fake GPU sm90" and meta["precision"] == "fp16"
    assert tb.build_engine(onnx, "fp16", cache) == p16 and len(fake_trt.builds) == 1          # cache hit
    p32 = tb.build_engine(onnx, "fp32", cache)
    assert p32 != p16 and fake_trt.builds[-1]["flags"] == [] and len(fake_trt.builds) == 2
    onnx.write_bytes(b"ONNX:images,lidar_depth ")                                             # new ONNX bytes
    p16b = tb.build_engine(onnx, "fp16", cache, log=logs.append)
    assert p16b != p16 and len(fake_trt.builds) == 3 and any("rebuilding" in m for m in logs)
    fake_trt.__version__ = "10.99.1-fake"                                                     # TensorRT upgrade
    try:
        assert tb.build_engine(onnx, "fp16", cache) != p16b and len(fake_trt.builds) == 4
    finally:
        fake_trt.__version__ = "10.99.0-fake"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="could not parse"):
        tb.build_engine(bad, "fp16", cache)


def test_build_engine_int8_calibrates_once(fake_trt, tmp_path):
    onnx = tmp_path / "camera_encoder.onnx"
    onnx.write_bytes(b"ONNX:images,lidar_depth")
    calib_file = tmp_path / "calib" / "cam.calib"
    with pytest.raises(UserError, match="INT8 needs calibration inputs"):
        tb.build_engine(onnx, "int8", tmp_path / "e", calibration_inputs=[], calibration_cache=calib_file)
    path = tb.build_engine(onnx, "int8", tmp_path / "e", calibration_inputs=list(_frames(6)),
                           calibration_batch_size=2, calibration_cache=calib_file, calibration_device="cpu")
    assert fake_trt.builds[-1] == {"flags": ["fp16", "int8"], "served": 3}
    assert calib_file.read_bytes().startswith(b"TRT-fake") and path.read_bytes() == b"PLAN:fp16,int8"
    assert json.loads(path.with_suffix(".json").read_text())["calibration_batches"] == 3
    # a forced rebuild reuses the calibration cache: no batches pulled, no inputs needed
    tb.build_engine(onnx, "int8", tmp_path / "e", rebuild=True, calibration_cache=calib_file,
                    calibration_device="cpu")
    assert fake_trt.builds[-1] == {"flags": ["fp16", "int8"], "served": 0}
