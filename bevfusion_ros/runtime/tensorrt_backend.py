"""TensorRT back-end: the two dense parts as TensorRT engines, run on torch CUDA tensors.

``TensorRTBackend(model, precision="fp16", onnx_dir=None, cache_dir=None, calibration_inputs=None, ...)``:

1. ONNX graphs from ``onnx_dir`` (``bevfusion-ros export``) or an on-demand export (export.ensure_export);
2. one engine per part from :func:`trt_builder.build_engine` -- loaded from the engine cache when the ONNX
   hash, TensorRT version, precision and GPU match, else built (INT8: calibrated with an
   ``IInt8EntropyCalibrator2`` over ``calibration_inputs``, dicts of the parts' input tensors, e.g. recorded
   from dataset frames with :func:`record_backend_inputs`);
3. at run time each input tensor's ``data_ptr()`` and a freshly allocated torch output tensor are bound
   with ``IExecutionContext.set_tensor_address`` and the engine runs with ``execute_async_v3`` on torch's
   current CUDA stream, so there is no host round trip and torch ops after it are ordered behind it.

Importing this module never needs TensorRT; constructing the back-end without it raises a one-line
UserError (trt_builder.require_tensorrt). NOT RUN on the development machines (no TensorRT, no CUDA):
only the code paths up to TensorRT are tested; see docs/runtime.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from bevfusion_ros.runtime import trt_builder
from bevfusion_ros.runtime.backend import Backend

PART_INPUTS = {"camera_encoder": ("images", "lidar_depth"), "bev_head": ("lidar_bev", "camera_bev", "map_raster")}


def split_calibration_inputs(samples: Iterable[Mapping[str, Any]], part_inputs: Iterable[str]):
    """The per-part view of calibration dicts that may carry every part's inputs."""
    names = tuple(part_inputs)
    for sample in samples:
        picked = {k: v for k, v in sample.items() if k in names and v is not None}
        if picked:
            yield picked


class _Engine:
    """A deserialized engine + execution context with named torch-tensor I/O."""

    def __init__(self, path: Path, trt, device: str = "cuda"):
        self.trt = trt
        self.path = path
        self.device = torch.device(device)
        self.engine, self._runtime = trt_builder.load_engine(path)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in names}
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, feeds: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        present = [t for t in feeds.values() if t is not None]
        out_device = present[0].device if present else self.device
        keep = []
        for name in self.inputs:
            tensor = feeds.get(name)
            shape = self.shapes[name]
            if tensor is None:
                tensor = torch.zeros(shape, dtype=self.dtypes[name], device=self.device)
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{self.path.name}: input {name!r} has shape {tuple(tensor.shape)}, the engine "
                                 f"expects {list(shape)}")
            tensor = tensor.to(device=self.device, dtype=self.dtypes[name]).contiguous()
            keep.append(tensor)
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            out = torch.empty(self.shapes[name], dtype=self.dtypes[name], device=self.device)
            outputs[name] = out
            self.context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream().cuda_stream if self.device.type == "cuda" else 0
        if not self.context.execute_async_v3(stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path.name}")
        # ``keep`` holds the (possibly converted) inputs alive until the work is queued; torch's caching
        # allocator only reuses them for work on this same stream, which runs after the engine.
        del keep
        return {k: v.float().to(out_device) for k, v in outputs.items()}


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: torch.nn.Module, precision: str = "fp16", onnx_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, calibration_inputs: Iterable[Mapping[str, Any]] | None = None,
                 calibration_batches: int = 64, calibration_cache_dir: str | Path | None = None,
                 workspace_bytes: int = trt_builder.DEFAULT_WORKSPACE_BYTES, rebuild: bool = False,
                 onnx_cache_dir: str | Path | None = None, log=print, device: str = "cuda", **_options):
        trt = trt_builder.require_tensorrt()       # clear error first: no export work without TensorRT
        if device != "cpu":                        # "cpu" only for tests with a TensorRT stand-in
            trt_builder.require_cuda()
        from bevfusion_ros.runtime.export import ensure_export
        self.precision = trt_builder.normalize_precision(precision)
        self.output_names = tuple(model.output_names)
        self.onnx_dir, self.manifest = ensure_export(model, onnx_dir, onnx_cache_dir)
        cache_dir = Path(cache_dir) if cache_dir is not None else trt_builder.default_cache_dir()
        samples = list(calibration_inputs) if calibration_inputs is not None else None
        self.engines: dict[str, _Engine] = {}
        self.engine_paths: dict[str, Path] = {}
        for part, entry in self.manifest["parts"].items():
            calib = None if samples is None else list(split_calibration_inputs(samples, PART_INPUTS[part]))
            calib_cache = None
            if calibration_cache_dir is not None:
                calib_cache = Path(calibration_cache_dir) / f"{part}.{entry['sha256'][:16]}.calib"
            path = trt_builder.build_engine(self.onnx_dir / entry["file"], self.precision, cache_dir,
                                            calibration_inputs=calib, calibration_max_batches=calibration_batches,
                                            calibration_cache=calib_cache, workspace_bytes=workspace_bytes,
                                            rebuild=rebuild, log=log, calibration_device=device)
            self.engine_paths[part] = path
            self.engines[part] = _Engine(path, trt, device)

    def run_camera_encoder(self, images, lidar_depth):
        engine = self.engines.get("camera_encoder")
        if engine is None:
            raise ValueError("this model has no camera encoder (LiDAR-only config)")
        out = engine({"images": images, "lidar_depth": lidar_depth})
        return out["depth_probs"], out["cam_feats"]

    def run_bev_head(self, lidar_bev, camera_bev, map_raster=None):
        out = self.engines["bev_head"]({"lidar_bev": lidar_bev, "camera_bev": camera_bev, "map_raster": map_raster})
        return {name: out[name] for name in self.output_names}


# ----------------------------------------------------------------------------- calibration data


class RecordingBackend(Backend):
    """Wraps a back-end and keeps CPU copies of the inputs it is given (calibration data for INT8)."""

    def __init__(self, inner: Backend, limit: int | None = None):
        self.inner = inner
        self.name = f"recording({inner.name})"
        self.limit = limit
        self.samples: list[dict[str, torch.Tensor]] = []
        self._pending: dict[str, torch.Tensor] = {}

    def _keep(self, **tensors):
        if self.limit is not None and len(self.samples) >= self.limit:
            return
        self._pending.update({k: v.detach().float().cpu().clone() for k, v in tensors.items() if v is not None})

    def run_camera_encoder(self, images, lidar_depth):
        self._keep(images=images, lidar_depth=lidar_depth)
        return self.inner.run_camera_encoder(images, lidar_depth)

    def run_bev_head(self, lidar_bev, camera_bev, map_raster=None):
        self._keep(lidar_bev=lidar_bev, camera_bev=camera_bev, map_raster=map_raster)
        if self._pending:
            self.samples.append(self._pending)
            self._pending = {}
        return self.inner.run_bev_head(lidar_bev, camera_bev, map_raster)


def record_backend_inputs(pipeline, frames: Iterable, limit: int = 64) -> list[dict[str, torch.Tensor]]:
    """Run ``pipeline.infer`` over dataset ``frames`` with its back-end wrapped by a recorder; returns one
    dict per frame with the dense parts' inputs (images, lidar_depth, lidar_bev, camera_bev, map_raster) --
    the INT8 calibration set, drawn from the same preprocessing the engines will see."""
    inner = pipeline.backend
    recorder = RecordingBackend(inner, limit)
    pipeline.backend = recorder
    try:
        for frame in frames:
            if len(recorder.samples) >= limit:
                break
            pipeline.infer(frame)
    finally:
        pipeline.backend = inner
    return recorder.samples
