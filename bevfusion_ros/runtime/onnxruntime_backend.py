"""onnxruntime back-end (CPU execution provider) for the two dense model parts.

``OnnxRuntimeBackend(model, onnx_dir=None, intra_op_threads=None, ...)``: sessions over the ONNX graphs
of ``bevfusion-ros export`` (``onnx_dir``, checked against the model) or, without one, of an on-demand
export cached by the model's weights fingerprint (export.ensure_export). Inputs and outputs are torch
tensors; with ``io_binding`` (default) the session reads the input tensors' memory and writes straight
into freshly allocated torch output tensors (no numpy copies either way).

Session options: ``intra_op_threads`` (default: torch's thread count, so ``--threads 2`` holds for both
back-ends), ``inter_op_threads`` (1, sequential execution), graph optimization level, and thread
spinning off by default (the sparse encoder and bev_pool run in torch between the two sessions on the
same cores; spinning ORT threads would steal their time).

Inputs the caller leaves out (``lidar_depth=None``; the BEV input of a modality with no data) are fed as
zeros, which is what the torch model does for a missing LiDAR depth and for masked cameras.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from bevfusion_ros.runtime.backend import Backend

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
_ORT_TO_TORCH = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64,
                 "tensor(int32)": torch.int32, "tensor(bool)": torch.bool}


def make_session_options(intra_op_threads: int | None = None, inter_op_threads: int = 1, graph_optimization: str = "all",
                         spin: bool = False, profile: bool = False):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads if intra_op_threads else max(1, torch.get_num_threads()))
    options.inter_op_num_threads = int(inter_op_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if graph_optimization not in _GRAPH_OPT:
        raise ValueError(f"graph_optimization must be one of {', '.join(_GRAPH_OPT)}")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[graph_optimization])
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    options.enable_profiling = bool(profile)
    return options


class OnnxSession:
    """One ONNX graph: named torch inputs -> named torch outputs, shapes checked against the graph."""

    def __init__(self, path: str | Path, options, io_binding: bool = True):
        import onnxruntime as ort
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, list(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [(o.name, list(o.shape), o.type) for o in self.session.get_outputs()]
        self.input_names = [n for n, _ in self.inputs]
        self.output_names = [n for n, _, _ in self.outputs]
        self.io_binding = bool(io_binding)

    def _static_shape(self, dims: Sequence, batch: int) -> tuple[int, ...] | None:
        shape = []
        for k, d in enumerate(dims):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif k == 0:
                shape.append(batch)
            else:
                return None
        return tuple(shape)

    def check_input(self, name: str, tensor: torch.Tensor, dims: Sequence) -> None:
        ok = tensor.dim() == len(dims) and all(not isinstance(d, int) or d <= 0 or d == s
                                               for d, s in zip(dims, tensor.shape))
        if not ok:
            raise ValueError(f"{self.path.stem}: input {name!r} has shape {tuple(tensor.shape)}, the ONNX graph "
                             f"expects {list(dims)}")

    def __call__(self, feeds: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        present = [t for t in feeds.values() if t is not None]
        if not present:
            raise ValueError(f"{self.path.stem}: no inputs given")
        batch = int(present[0].shape[0])
        tensors: dict[str, torch.Tensor] = {}
        for name, dims in self.inputs:
            tensor = feeds.get(name)
            if tensor is None:
                shape = self._static_shape(dims, batch)
                if shape is None:
                    raise ValueError(f"{self.path.stem}: input {name!r} is required")
                tensor = torch.zeros(shape, dtype=torch.float32)
            tensor = tensor.detach()
            if tensor.device.type != "cpu":
                tensor = tensor.cpu()
            tensor = tensor.to(torch.float32).contiguous()
            self.check_input(name, tensor, dims)
            tensors[name] = tensor
        outputs = self._run_bound(tensors, batch) if self.io_binding else None
        if outputs is None:
            result = self.session.run(self.output_names, {k: v.numpy() for k, v in tensors.items()})
            outputs = {name: torch.from_numpy(np.ascontiguousarray(arr)) for name, arr in zip(self.output_names, result)}
        device = present[0].device
        if device.type != "cpu":   # a pipeline on another device gets its outputs back there
            outputs = {k: v.to(device) for k, v in outputs.items()}
        return outputs

    def _run_bound(self, tensors: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor] | None:
        """Zero-copy run through IO binding; None when an output shape is not static (then plain run)."""
        outputs: dict[str, torch.Tensor] = {}
        for name, dims, type_name in self.outputs:
            shape = self._static_shape(dims, batch)
            dtype = _ORT_TO_TORCH.get(type_name)
            if shape is None or dtype is None:
                return None
            outputs[name] = torch.empty(shape, dtype=dtype)
        binding = self.session.io_binding()
        for name, tensor in tensors.items():
            binding.bind_input(name, "cpu", 0, np.float32, list(tensor.shape), tensor.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cpu", 0, tensor.numpy().dtype, list(tensor.shape), tensor.data_ptr())
        self.session.run_with_iobinding(binding)
        return outputs


class OnnxRuntimeBackend(Backend):
    """The camera encoder and the BEV head through onnxruntime's CPU execution provider."""

    name = "onnxruntime"

    def __init__(self, model: torch.nn.Module, onnx_dir: str | Path | None = None, intra_op_threads: int | None = None,
                 inter_op_threads: int = 1, graph_optimization: str = "all", io_binding: bool = True,
                 spin: bool = False, cache_dir: str | Path | None = None, threads: int | None = None, **_options):
        from bevfusion_ros.runtime.export import ensure_export
        self.output_names = tuple(model.output_names)
        self.onnx_dir, self.manifest = ensure_export(model, onnx_dir, cache_dir)
        options = make_session_options(intra_op_threads or threads, inter_op_threads, graph_optimization, spin)
        parts = self.manifest["parts"]
        self.camera = OnnxSession(self.onnx_dir / parts["camera_encoder"]["file"], options, io_binding) \
            if "camera_encoder" in parts else None
        self.head = OnnxSession(self.onnx_dir / parts["bev_head"]["file"], options, io_binding)
        if tuple(self.head.output_names) != self.output_names:
            raise ValueError(f"bev_head.onnx outputs {self.head.output_names} != model outputs {self.output_names}")

    def run_camera_encoder(self, images: torch.Tensor, lidar_depth: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.camera is None:
            raise ValueError("this model has no camera encoder (LiDAR-only config)")
        out = self.camera({"images": images, "lidar_depth": lidar_depth})
        return out["depth_probs"], out["cam_feats"]

    def run_bev_head(self, lidar_bev: torch.Tensor | None, camera_bev: torch.Tensor | None,
                     map_raster: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.head({"lidar_bev": lidar_bev, "camera_bev": camera_bev, "map_raster": map_raster})
