"""One interface over the dense model parts, so the pipeline runs torch, onnxruntime or TensorRT alike.

``Backend`` runs the two exportable parts of ``BEVFusion`` (see models/README.md, "Tensor contract"):

- ``run_camera_encoder(images [B,N,3,H,W], lidar_depth [B,N,1,H,W] | None) -> (depth_probs [B,N,D,h,w],
  cam_feats [B,N,C,h,w])``
- ``run_bev_head(lidar_bev [B,Cl,X,Y] | None, camera_bev [B,Cc,X,Y] | None, map_raster [B,6,Xm,Ym] | None)
  -> dict[name, Tensor]`` with the names ``model.output_names`` (heatmap, reg, height, dim, rot, vel, attr,
  map); ``map_raster`` only for configs with ``map.lidar_raster``.

Voxelization, the sparse encoder and bev_pool stay in torch in every back-end. ``make_backend(name,
model, **options)`` builds one by name; ``onnxruntime`` and ``tensorrt`` are imported lazily from
``bevfusion_ros.runtime.onnxruntime_backend`` / ``.tensorrt_backend`` (classes ``OnnxRuntimeBackend`` /
``TensorRTBackend``, constructed as ``cls(model, **options)``).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import torch

from bevfusion_ros.errors import UserError

BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("bevfusion_ros.runtime.backend", "TorchBackend"),
    "onnxruntime": ("bevfusion_ros.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("bevfusion_ros.runtime.tensorrt_backend", "TensorRTBackend"),
}


class Backend(ABC):
    name: str = "abstract"

    @abstractmethod
    def run_camera_encoder(self, images: torch.Tensor, lidar_depth: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image backbone + neck + depth net."""

    @abstractmethod
    def run_bev_head(self, lidar_bev: torch.Tensor | None, camera_bev: torch.Tensor | None,
                     map_raster: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Fuser + decoder + heads -> raw outputs by name."""

    def run_bev_head_split(self, lidar_bev: torch.Tensor | None, camera_bev: torch.Tensor | None,
                           map_raster: torch.Tensor | None = None):
        """``(outputs, map_part)``: the outputs available now, and a callable computing the rest (``{"map":
        ...}``) that may run on another thread while the caller post-processes detections; ``None`` when
        everything is in ``outputs``. Engines that run the heads as one graph use this default."""
        return self.run_bev_head(lidar_bev, camera_bev, map_raster), None


class TorchBackend(Backend):
    """The reference: calls the model's modules directly (CPU or GPU, fp32; fp16 autocast on CUDA when
    ``half=True``)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, half: bool = False, **_options):
        self.model = model.eval()
        self.output_names = tuple(model.output_names)
        self.half = bool(half)

    def _autocast(self, tensor: torch.Tensor | None):
        enabled = self.half and tensor is not None and tensor.is_cuda
        return torch.autocast("cuda", dtype=torch.float16, enabled=enabled)

    @torch.inference_mode()
    def run_camera_encoder(self, images, lidar_depth):
        with self._autocast(images):
            depth, feats = self.model.camera_encoder(images, lidar_depth)
        return depth.float(), feats.float()

    @torch.inference_mode()
    def run_bev_head(self, lidar_bev, camera_bev, map_raster=None):
        ref = lidar_bev if lidar_bev is not None else camera_bev
        with self._autocast(ref):
            outputs = self.model.bev_head(lidar_bev, camera_bev, map_raster)
        return {name: out.float() for name, out in zip(self.output_names, outputs)}

    @torch.inference_mode()
    def run_bev_head_split(self, lidar_bev, camera_bev, map_raster=None):
        """Fuser, decoder and detection head now; the map head (a third of the heads' time on CPU) as a
        callable, for the pipeline's second thread."""
        if self.model.map_head is None:
            return self.run_bev_head(lidar_bev, camera_bev, map_raster), None
        ref = lidar_bev if lidar_bev is not None else camera_bev
        with self._autocast(ref):
            x = self.model.shared_bev(lidar_bev, camera_bev)
            detection = self.model.detection_outputs(x)
        outputs = {name: out.float() for name, out in zip(self.output_names, detection)}

        @torch.inference_mode()            # autocast and inference mode are per thread
        def map_part() -> dict[str, torch.Tensor]:
            with self._autocast(ref):
                return {"map": self.model.map_head(x, map_raster).float()}
        return outputs, map_part


def available_backends() -> tuple[str, ...]:
    return tuple(BACKENDS)


def make_backend(name: str, model: torch.nn.Module, **options) -> Backend:
    """Backend by name ("torch", "onnxruntime", "tensorrt"); options go to its constructor."""
    if name not in BACKENDS:
        raise UserError(f"unknown back-end {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"back-end {name!r} is not available here: {err}") from None
    return getattr(module, class_name)(model, **options)
