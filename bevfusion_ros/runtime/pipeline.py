"""``PerceptionPipeline``: Frame -> PerceptionResult with any back-end, timing every stage.

Stages (``result.timings_ms`` keys): ``preprocess`` (image resize/crop/normalize, LiDAR depth maps),
``voxelize``, ``lidar_encoder`` (sparse conv), ``map_raster`` (only with ``map.lidar_raster``),
``camera_encoder`` (back-end), ``bev_pool`` (incl. a plan rebuild when needed), ``bev_head`` (back-end),
``postprocess``, ``total``.

The bev_pool plan is cached: it is rebuilt only when the camera matrices (K, T_lidar_cam, image_aug)
change -- they are hashed every frame; ``plan_rebuilds`` counts rebuilds.

Fallbacks (documented in models/README.md): an empty point cloud still runs (the LiDAR BEV is zero; an
empty scene yields empty detections); masked cameras have their features zeroed, so with every camera
masked a fusion model runs LiDAR-only; a camera-only model with every camera masked returns no detections
and no map. Missing/corrupt checkpoints and config/checkpoint mismatches raise ``UserError``.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.frame import CameraInput, Detections, Frame, PerceptionResult
from bevfusion_ros.model.bevfusion import BEVFusion
from bevfusion_ros.model.checkpoint import load_into, read_checkpoint
from bevfusion_ros.model.config import ModelConfig, load_config
from bevfusion_ros.model.postprocess import PostProcessor
from bevfusion_ros.model.preprocess import Preprocessor
from bevfusion_ros.runtime.backend import Backend, make_backend


def _single_threaded_numpy_blas() -> None:
    """numpy's BLAS (OpenBLAS) with one thread, process-wide (inference processes only).

    Why: the pipeline's numpy products are tiny (3x3 transforms, box geometry), and OpenBLAS's extra
    threads busy-wait after each one, taking the cores torch's threads and the rest of the process need.
    Measured: the model process burned 240 ms of CPU per 133 ms frame before, 133 ms after, at the same
    wall time; the in-process benchmark (torch 2 threads) gained 1-6 ms. The nodes also get
    OPENBLAS_NUM_THREADS=1 in their environment (launch_graph.NODE_ENV), which covers their own numpy
    before this runs; here threadpoolctl sets it at run time for any process that builds a pipeline."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:             # optional: without it only the environment variable applies
        return
    threadpool_limits(limits=1, user_api="blas")


def load_model(config: ModelConfig | str | Path, checkpoint_path: str | Path | None, device: str = "cpu"
               ) -> tuple[BEVFusion, ModelConfig]:
    config = config if isinstance(config, ModelConfig) else load_config(config)
    model = BEVFusion(config)
    if checkpoint_path is not None:
        payload = read_checkpoint(checkpoint_path)
        load_into(model, payload, config, source=f"checkpoint {checkpoint_path}")
    return model.to(device).eval(), config


class PerceptionPipeline:
    def __init__(self, config_path: str | Path | ModelConfig, checkpoint_path: str | Path | None,
                 backend: str | Backend = "torch", device: str = "cpu", score_threshold: float | None = None,
                 modality: str | None = None, parallel_branches: bool = False, **backend_options):
        """``parallel_branches``: a second thread runs camera preprocessing, the camera encoder, bev_pool and
        the map raster while this one voxelizes and runs the sparse encoder, then (torch back-end) the map
        head while this one post-processes the detections. For a process whose torch runs one intra-op
        thread (the node's model process) on a machine with a core to spare; with several intra-op threads
        the two would only compete for the same cores."""
        config = config_path if isinstance(config_path, ModelConfig) else load_config(config_path)
        if modality is not None and modality != config.modality:
            raise UserError(f"modality {modality!r} requested but the config is {config.modality!r}; mask "
                            "cameras (image=None) or pass no points to run a fusion model single-modality")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available")
        self.model, self.config = load_model(config, checkpoint_path, str(self.device))
        if self.device.type == "cpu":
            self._fuse_sparse()
            # Small trained weights and post-ReLU activations produce subnormal floats, which x86 CPUs
            # handle in microcode: measured 307 -> 191 ms for the tiny camera encoder. Flushing them to
            # zero changes results by < 1e-30. (Process-wide flag; inference processes only.)
            torch.set_flush_denormal(True)
            _single_threaded_numpy_blas()
        self.backend = backend if isinstance(backend, Backend) else make_backend(backend, self.model,
                                                                                 **backend_options)
        self.preprocess = Preprocessor(self.config)
        self.postprocess = PostProcessor(self.config, score_threshold)
        self.plan_rebuilds = 0
        self._plan = None
        self._plan_key: str | None = None
        self._branch_pool = ThreadPoolExecutor(1, thread_name_prefix="camera-branch") \
            if parallel_branches and self.config.use_camera and self.config.use_lidar else None

    def _fuse_sparse(self) -> None:
        if not self.config.use_lidar:
            return
        try:
            import sparse_conv
            fused = sparse_conv.fuse_for_inference(self.model.lidar.encoder)
            if fused is not None:
                self.model.lidar.encoder = fused
        except (ImportError, AttributeError, NotImplementedError):
            pass

    # ------------------------------------------------------------------ plan cache
    def _camera_plan(self, inputs: dict):
        arrays = [inputs["intrinsics"], inputs["T_lidar_cam"], inputs["image_aug"]]
        digest = hashlib.sha1()
        for a in arrays:
            digest.update(a.detach().cpu().numpy().astype(np.float32).tobytes())
        key = digest.hexdigest()
        if key != self._plan_key:
            self._plan = self.model.vtransform.plan(*arrays)
            self._plan_key = key
            self.plan_rebuilds += 1
        return self._plan

    # ------------------------------------------------------------------ inference
    def _camera_inputs(self, frame: Frame, points: torch.Tensor) -> dict:
        try:
            return self.preprocess.camera_inputs(frame, points, self.device)
        except ValueError as err:
            raise UserError(f"bad frame: {err}") from None

    @torch.inference_mode()
    def _camera_branch(self, inputs: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Camera encoder + bev_pool -> (camera BEV, their timings in ms)."""
        timings = {}
        start = time.perf_counter()
        depth, context = self.backend.run_camera_encoder(inputs["images"], inputs.get("lidar_depth"))
        context = context * inputs["camera_mask"].to(context.dtype)[:, :, None, None, None]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        encoded = time.perf_counter()
        timings["camera_encoder"] = (encoded - start) * 1e3
        camera_bev = self.model.vtransform.pool(self._camera_plan(inputs), depth, context)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        timings["bev_pool"] = (time.perf_counter() - encoded) * 1e3
        return camera_bev, timings

    @staticmethod
    def _timed(fn):
        start = time.perf_counter()
        return fn(), (time.perf_counter() - start) * 1e3

    @torch.inference_mode()          # per thread: this runs on the branch thread
    def _side_branch(self, frame: Frame, points: list[torch.Tensor], cameras: "_LateCameras | None") -> tuple:
        """Everything that does not wait for the sparse encoder, for the second thread: camera inputs,
        camera branch, map raster -> (camera inputs, camera BEV, map raster, timings)."""
        timings: dict[str, float] = {}
        if cameras is not None:
            _, timings["cameras_wait"] = self._timed(lambda: cameras.fill(frame))
        camera_inputs, timings["preprocess_camera"] = self._timed(lambda: self._camera_inputs(frame, points[0]))
        camera_bev, camera_timings = self._camera_branch(camera_inputs)
        timings.update(camera_timings)
        map_raster = None
        if self.model.uses_map_raster:
            map_raster, timings["map_raster"] = self._timed(lambda: self.model.map_raster(points))
        return camera_inputs, camera_bev, map_raster, timings

    def infer(self, frame: Frame, on_detections: Callable[[Detections], None] | None = None,
              cameras: Callable[[], list[CameraInput]] | None = None) -> PerceptionResult:
        """One frame -> detections and map. Stage timings (ms) in ``timings_ms``; with
        ``parallel_branches`` the second thread's stages (``preprocess_camera``, ``camera_encoder``,
        ``bev_pool``, ``map_raster``) overlap the LiDAR ones, ``branch_wait`` is how long the LiDAR
        thread then waited for them, and ``map_head`` (torch back-end) ran beside the detections'
        post-processing.

        ``on_detections(detections)``, when given, is called as soon as the detections exist, before the
        map is finished (with ``parallel_branches`` the map head may still be running): whoever publishes
        them need not wait for the map. ``timings_ms["detections"]`` is when that was (ms from the start).

        ``cameras()``, when given, supplies ``frame.cameras`` late (``frame.cameras`` is then set from it):
        it is called once, on the camera side, so that the LiDAR branch starts while the caller is still
        decoding the images (the node does; ``cameras_wait`` is how long the camera side waited for
        them). It is called even when the frame fails or the model has no camera branch, so a caller
        that hands over work in it never waits in vain."""
        late = None if cameras is None else _LateCameras(cameras)
        try:
            result = self._infer(frame, on_detections, late)
        except BaseException:
            if late is not None:
                try:
                    late.fill(frame)
                except Exception:  # noqa: BLE001 - the frame's own error is the one to report
                    pass
            raise
        if late is not None:
            late.fill(frame)            # no-op when the camera side already did
        return result

    @torch.inference_mode()
    def _infer(self, frame: Frame, on_detections, cameras: "_LateCameras | None") -> PerceptionResult:
        timings: dict[str, float] = {}
        start = t = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal t
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            timings[name] = (now - t) * 1e3
            t = now

        try:
            inputs = self.preprocess.lidar_inputs(frame, self.device, check_cameras=cameras is None)
        except ValueError as err:
            raise UserError(f"bad frame: {err}") from None
        config = self.config
        side = None
        if self._branch_pool is not None:
            side = self._branch_pool.submit(self._side_branch, frame, inputs["points"], cameras)
        else:
            if cameras is not None:
                cameras.fill(frame)
            inputs.update(self._camera_inputs(frame, inputs["points"][0]))
        lap("preprocess")
        if side is None and config.use_camera and not bool(inputs["camera_mask"].any()) and not config.use_lidar:
            timings["total"] = (time.perf_counter() - start) * 1e3
            return PerceptionResult(Detections.empty(), None, timings)
        lidar_bev = camera_bev = map_raster = None
        if config.use_lidar:
            feats, coords = self.model.lidar.voxelize(inputs["points"])
            lap("voxelize")
            lidar_bev = self.model.lidar.encode(feats, coords, 1)
            lap("lidar_encoder")
        if side is not None:
            camera_inputs, camera_bev, map_raster, side_timings = side.result()
            inputs.update(camera_inputs)
            lap("branch_wait")
            timings.update(side_timings)
        else:
            if self.model.uses_map_raster:
                map_raster = self.model.map_raster(inputs["points"])
                lap("map_raster")
            if config.use_camera:
                camera_bev, camera_timings = self._camera_branch(inputs)
                timings.update(camera_timings)
                t = time.perf_counter()
        map_job = None
        if self._branch_pool is not None:
            # the map head on the second thread while this one post-processes the detections
            outputs, map_part = self.backend.run_bev_head_split(lidar_bev, camera_bev, map_raster)
            if map_part is not None:
                map_job = self._branch_pool.submit(self._timed, map_part)
        else:
            outputs = self.backend.run_bev_head(lidar_bev, camera_bev, map_raster)
        lap("bev_head")
        detections = self.postprocess.detections(outputs, points=inputs["points"][0]) \
            if config.detection.enabled else Detections.empty()
        timings["detections"] = (time.perf_counter() - start) * 1e3
        if on_detections is not None:
            on_detections(detections)
        if map_job is not None:
            map_outputs, timings["map_head"] = map_job.result()
            outputs = {**outputs, **map_outputs}
        bev_map = self.postprocess.bev_map(outputs)
        lap("postprocess")
        timings["total"] = (time.perf_counter() - start) * 1e3
        return PerceptionResult(detections, bev_map, timings)


class _LateCameras:
    """``frame.cameras`` from a callable, fetched at most once (from whichever thread asks first)."""

    def __init__(self, fetch: Callable[[], list[CameraInput]]):
        self._fetch = fetch
        self._lock = threading.Lock()
        self._done = False

    def fill(self, frame: Frame) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            frame.cameras = self._fetch()
