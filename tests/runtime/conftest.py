"""A toy model with the real model's two-part tensor signature (fast to export), for back-end tests."""
from __future__ import annotations

import ctypes
import sys
from types import SimpleNamespace

import numpy as np

import pytest
import torch
from torch import nn


class ToyConfig(SimpleNamespace):
    def to_dict(self):
        return {"name": self.name, "modality": self.modality, "cams": self.num_cameras}


def toy_config(modality="fusion", lidar_depth=True):
    return ToyConfig(name=f"toy-{modality}", modality=modality, num_cameras=2, bev_size=(12, 10),
                     use_camera=modality in ("fusion", "camera"), use_lidar=modality in ("fusion", "lidar"),
                     camera=SimpleNamespace(image_size=(16, 24)), vtransform=SimpleNamespace(lidar_depth=lidar_depth))


class ToyBEVFusion(nn.Module):
    """camera_encoder: conv over images (+ depth) -> softmax depth bins + features at stride 2;
    bev_head: concat -> conv -> (heatmap, reg, map) with a bilinear upsample like the map head."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.camera_channels, self.lidar_channels, self.depth_bins = 6, 5, 4
        cin = 3 + (1 if config.vtransform.lidar_depth else 0)
        self.cam = nn.Sequential(nn.Conv2d(cin, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, self.depth_bins + self.camera_channels, 1))
        fin = (self.camera_channels if config.use_camera else 0) + (self.lidar_channels if config.use_lidar else 0)
        self.fuse = nn.Sequential(nn.Conv2d(fin, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.heat, self.reg, self.map = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 2, 1), nn.Conv2d(8, 2, 1)
        self.output_names = ("heatmap", "reg", "map")
        for m in self.modules():   # non-trivial BN statistics, so exported graphs are not near-constant
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)

    def camera_encoder(self, images, lidar_depth=None):
        b, n, _, h, w = images.shape
        x = images.flatten(0, 1)
        if self.config.vtransform.lidar_depth:
            d = lidar_depth.flatten(0, 1) if lidar_depth is not None else x.new_zeros(b * n, 1, h, w)
            x = torch.cat([x, d / 60.0], 1)
        y = self.cam(x)
        depth = y[:, : self.depth_bins].softmax(1)
        feats = y[:, self.depth_bins:]
        return depth.view(b, n, self.depth_bins, h // 2, w // 2), feats.view(b, n, self.camera_channels, h // 2, w // 2)

    def bev_head(self, lidar_bev, camera_bev, map_raster=None):
        feats = ([camera_bev] if self.config.use_camera else []) + ([lidar_bev] if self.config.use_lidar else [])
        x = self.fuse(torch.cat(feats, 1))
        seg = nn.functional.interpolate(self.map(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.heat(x).sigmoid(), self.reg(x), seg


@pytest.fixture
def toy_model():
    torch.manual_seed(0)
    return ToyBEVFusion(toy_config()).eval()


def toy_inputs(model, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    h, w = cfg.camera.image_size
    x, y = cfg.bev_size
    return {"images": torch.randn(batch, cfg.num_cameras, 3, h, w, generator=g),
            "lidar_depth": torch.rand(batch, cfg.num_cameras, 1, h, w, generator=g) * 50,
            "lidar_bev": torch.randn(batch, model.lidar_channels, x, y, generator=g).relu(),
            "camera_bev": torch.randn(batch, model.camera_channels, x, y, generator=g).relu()}


# ----------------------------------------------------------------------------- a TensorRT stand-in


def _view(ptr: int, shape, dtype=np.float32) -> np.ndarray:
    """numpy view of raw memory at ``ptr`` (what TensorRT does with a bound tensor address)."""
    count = int(np.prod(shape))
    buf = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(int(ptr))
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


class FakeTRT:
    """A stand-in for the `tensorrt` module with the TensorRT 10 names our code uses. The builder records
    what it was asked for and drives an INT8 calibrator the way TensorRT does (read the cache; if none,
    pull batches until None, then write the cache); a "plan" is the ONNX bytes, and the "engine" runs them
    with onnxruntime, reading inputs from and writing outputs to the bound raw addresses."""

    __version__ = "10.99.0-fake"
    builds: list = []
    float32, float16, int32, int8, bool, int64 = "FLOAT", "HALF", "INT32", "INT8", "BOOL", "INT64"

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"
        INT8 = "int8"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class IInt8EntropyCalibrator2:
        def __init__(self):
            self._trt_base_init = True

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            import onnx
            if data.startswith(b"ONNX:"):     # tiny fake files of the cache tests
                self.network.update(inputs=data.decode().split(":")[1].split(","), onnx=None)
                return True
            try:
                model = onnx.load_from_string(data)
            except Exception:  # noqa: BLE001
                self.num_errors = 1
                return False
            self.network.update(inputs=[i.name for i in model.graph.input], onnx=data)
            return True

        def get_error(self, i):
            return "In node 0 (parseGraph): INVALID_GRAPH: not an ONNX model"

    class _Config:
        def __init__(self):
            self.flags, self.pool, self.int8_calibrator = set(), {}, None

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def set_flag(self, flag):
            self.flags.add(flag)

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            assert flags == 0          # TensorRT 10: explicit batch is the default
            return {}

        def create_builder_config(self):
            return FakeTRT._Config()

        def build_serialized_network(self, network, config):
            cal = config.int8_calibrator
            served = 0
            if "int8" in config.flags:
                assert cal is not None and cal._trt_base_init
                if cal.read_calibration_cache() is None:
                    while cal.get_batch(network["inputs"]) is not None:
                        served += 1
                    cal.write_calibration_cache(b"TRT-fake-EntropyCalibration2\n")
            FakeTRT.builds.append({"flags": sorted(config.flags), "served": served})
            if network.get("onnx") is not None:
                return network["onnx"]
            return b"PLAN:" + ",".join(sorted(config.flags)).encode()

    class _Context:
        def __init__(self, engine):
            self.engine, self.addresses = engine, {}

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = int(ptr)

        def execute_async_v3(self, stream):
            e = self.engine
            feeds = {n: _view(self.addresses[n], e.shapes[n]).copy() for n in e.inputs}
            for name, value in zip(e.outputs, e.session.run(e.outputs, feeds)):
                np.copyto(_view(self.addresses[name], e.shapes[name]), value)
            return True

    class _Engine:
        def __init__(self, plan):
            import onnxruntime as ort
            self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.shapes = {i.name: tuple(i.shape) for i in [*self.session.get_inputs(), *self.session.get_outputs()]}
            self.num_io_tensors = len(self.shapes)

        def get_tensor_name(self, i):
            return [*self.inputs, *self.outputs][i]

        def get_tensor_mode(self, name):
            return FakeTRT.TensorIOMode.INPUT if name in self.inputs else FakeTRT.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def get_tensor_dtype(self, name):
            return FakeTRT.float32

        def create_execution_context(self):
            return FakeTRT._Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, plan):
            return FakeTRT._Engine(plan) if not plan.startswith(b"PLAN:") else None


@pytest.fixture
def fake_trt(monkeypatch):
    from bevfusion_ros.runtime import trt_builder as tb
    FakeTRT.builds = []
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTRT)
    monkeypatch.setattr(tb, "require_cuda", lambda: torch)
    monkeypatch.setattr(tb, "current_device_name", lambda device=None: "Fake GPU sm90")
    return FakeTRT
