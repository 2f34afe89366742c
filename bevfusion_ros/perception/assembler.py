"""Frame assembly: LiDAR sweeps + camera images + calibration -> one :class:`bevfusion_ros.frame.Frame`.

The LiDAR sweep is the pivot. Ingestion (:meth:`FrameAssembler.add_lidar`, :meth:`add_image`,
:meth:`set_camera_info`) is cheap and runs on the ROS callback threads; :meth:`assemble` does the heavy
part (motion compensation, JPEG decoding) on the worker thread, only for frames the model will run on.

Multi-sweep accumulation follows nuScenes' ``LoadPointsFromMultiSweeps`` (mmdet3d / BEVFusion):

- the pivot sweep keeps its points, with Δt = 0;
- each of the previous ``sweeps - 1`` sweeps (newest first) loses the points within ``remove_close_radius``
  (a square in x-y, as mmdet3d's ``_remove_close``), is moved into the pivot LiDAR frame with
  ``T_lidar_now^-1 @ T_global_lidar_prev`` where ``T_global_lidar = T_map_base(stamp) @ T_base_lidar``
  (ego pose from ``/tf`` at the sweep's own stamp), and gets Δt = (pivot stamp - sweep stamp) in seconds.

Cameras: for each camera the buffered image closest in time to the LiDAR stamp, if within
``max_camera_lidar_delay_s``; otherwise the camera is masked (``image=None``) with a counted reason.
Extrinsics come from a :class:`TransformSource` (the node's TF buffer: ``/tf_static`` base_link -> sensor)
unless a calibration file overrides them (:meth:`set_calibration`).

Every problem with an input is either raised as :class:`InputRejected` (the frame cannot be built) or
returned as a note (the frame is built without that part); the node counts both by their ``reason``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.frame import CameraInput, Frame


class InputRejected(Exception):
    """An input the assembler cannot use. ``reason`` is a short counter key (e.g. ``empty_cloud``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransformSource(Protocol):
    """What the assembler needs from a TF buffer: ``T_target_source`` (4x4) at ``stamp_us``
    (``None`` = latest / static). Raises ``LookupError`` when the transform is unknown."""

    def lookup(self, target_frame: str, source_frame: str, stamp_us: int | None) -> np.ndarray: ...


@dataclass
class AssemblerConfig:
    sweeps: int = 10                          # sweeps per frame, the pivot included
    max_camera_lidar_delay_s: float = 0.1     # |t_image - t_lidar| above this masks the camera
    max_sweep_gap_s: float = 1.0              # previous sweeps older than this are not accumulated
    remove_close_radius: float = 1.0          # mmdet3d _remove_close on previous sweeps (0 = off)
    max_points: int = 400_000                 # larger clouds are decimated to this many points
    camera_names: tuple[str, ...] = CAMERA_NAMES
    base_frame: str = "base_link"
    map_frame: str = "map"
    images_per_camera: int = 3                # buffered images per camera
    camera_ego_motion: bool = False           # T_lidar_cam through the ego poses at both stamps
    pad_empty_sweeps: bool = True             # no previous sweep at all: repeat the pivot (mmdet3d)
    input_wait_s: float = 0.05                # longest wait for inputs due but still in flight (0 = off)
    camera_wait_tolerance_s: float = 0.005    # images due up to this long after the sweep are waited for
    startup_sweeps: int = 10                  # for this many sweeps, inputs never seen yet are waited for
    image_reduction: int = 1                  # images may arrive decoded at 1/r scale (JPEG DCT scaling)
    decode_threads: int = 2                   # images of one frame are decoded in parallel (cv2 frees the GIL)

    def __post_init__(self):
        if self.sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {self.sweeps}")
        if self.max_camera_lidar_delay_s < 0 or self.max_sweep_gap_s <= 0:
            raise ValueError("max_camera_lidar_delay_s must be >= 0 and max_sweep_gap_s > 0")
        if self.max_points < 1 or self.images_per_camera < 1:
            raise ValueError("max_points and images_per_camera must be >= 1")


@dataclass
class Sweep:
    """One received LiDAR scan (points in its own frame) and, once known, its pose in the map."""

    stamp_us: int
    frame_id: str
    points: np.ndarray                        # N x 4 float32 x, y, z, intensity (finite)
    received_ns: int = 0                      # wall clock (time.time_ns) when the message arrived
    T_map_lidar: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Image:
    stamp_us: int
    frame_id: str
    decode: Callable[[], np.ndarray]
    arrival: float = 0.0                      # time.monotonic() when buffered
    decoded: np.ndarray | None = None
    error: str | None = None

    def get(self) -> np.ndarray | None:
        if self.decoded is None and self.error is None:
            try:
                image = self.decode()
                if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(f"decoder returned {getattr(image, 'shape', None)} "
                                     f"{getattr(image, 'dtype', None)}, expected H x W x 3 uint8")
                self.decoded = image
            except Exception as err:  # noqa: BLE001 - any decoder failure masks this image only
                self.error = str(err) or type(err).__name__
            self.decode = None  # free the compressed payload
        return self.decoded


@dataclass
class _CameraInfo:
    K: np.ndarray
    width: int
    height: int
    frame_id: str
    stamp_us: int | None = None


def reduced_intrinsics(K: np.ndarray, reduction: int) -> np.ndarray:
    """K of an image decoded at 1/``reduction`` scale (libjpeg DCT scaling): pixel centres map as
    u' = (u + 0.5) / r - 0.5."""
    out = np.asarray(K, dtype=np.float64).copy()
    out[0, 0] /= reduction
    out[1, 1] /= reduction
    out[0, 1] /= reduction
    out[0, 2] = (out[0, 2] + 0.5) / reduction - 0.5
    out[1, 2] = (out[1, 2] + 0.5) / reduction - 0.5
    return out


def sanitize_points(points: np.ndarray, max_points: int) -> tuple[np.ndarray, list[str]]:
    """Validate an N x >=4 cloud: drop non-finite rows, decimate above ``max_points``.
    Returns ``(points N x 4 float32, notes)``; raises :class:`InputRejected` when nothing usable is left."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 4:
        raise InputRejected("bad_cloud_shape", f"expected N x >=4 points, got shape {points.shape}")
    if len(points) == 0:
        raise InputRejected("empty_cloud", "the cloud has no points")
    notes: list[str] = []
    points = points[:, :4].astype(np.float32, copy=False)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        notes.append("nonfinite_points")
        points = points[finite]
        if len(points) == 0:
            raise InputRejected("empty_cloud", "no finite points in the cloud")
    if len(points) > max_points:
        notes.append("oversized_cloud")
        stride = int(np.ceil(len(points) / max_points))
        points = points[::stride]
    return np.ascontiguousarray(points), notes


def remove_close(points: np.ndarray, radius: float) -> np.ndarray:
    """mmdet3d ``_remove_close``: drop points with |x| < radius and |y| < radius."""
    if radius <= 0:
        return points
    close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
    return points[~close]


def accumulate_sweeps(pivot_points: np.ndarray, pivot_stamp_us: int, T_map_lidar_now: np.ndarray | None,
                      previous: list[tuple[np.ndarray, int, np.ndarray]], remove_close_radius: float,
                      pad_to: int = 1) -> np.ndarray:
    """Stack the pivot sweep and ``previous`` = [(points N x 4, stamp_us, T_map_lidar)] (newest first)
    into the pivot LiDAR frame: N x 5 float32 x, y, z, intensity, Δt (s). Without any previous sweep, the
    pivot (close points removed) is repeated up to ``pad_to`` sweeps with Δt = 0 (``pad_empty_sweeps``)."""
    pivot = np.asarray(pivot_points[:, :4], dtype=np.float32)
    blocks: list[tuple[np.ndarray, np.ndarray | None, float]] = [(pivot, None, 0.0)]   # (points, T, dt)
    if not previous and pad_to > 1:
        blocks += [(remove_close(pivot, remove_close_radius), None, 0.0)] * (pad_to - 1)
    if previous and T_map_lidar_now is not None:
        T_now_map = geo.invert_transform(T_map_lidar_now)
        for points, stamp_us, T_map_lidar in previous:
            blocks.append((remove_close(points[:, :4], remove_close_radius), T_now_map @ T_map_lidar,
                           (pivot_stamp_us - stamp_us) * 1e-6))
    # one output array, each block written in place (no intermediate concatenations: this runs per frame
    # on ~100k points); transforms in float32 (rounding ~1e-5 m at 100 m, far below a voxel)
    out = np.empty((sum(len(b[0]) for b in blocks), 5), np.float32)
    row = 0
    for points, T, dt in blocks:
        n = len(points)
        target = out[row: row + n]
        if T is None:
            target[:, :3] = points[:, :3]
        else:
            np.matmul(points[:, :3], T[:3, :3].T.astype(np.float32), out=target[:, :3])
            target[:, :3] += T[:3, 3].astype(np.float32)
        target[:, 3] = points[:, 3]
        target[:, 4] = dt
        row += n
    return out


class PendingCameras:
    """A frame's cameras still being decoded (:meth:`FrameAssembler.assemble_deferred`): calling it waits
    for them and returns them (once; later calls return the same list). ``elapsed_ms``: how long the call
    waited and worked."""

    def __init__(self, finish: Callable[[], list[CameraInput]]):
        self._finish = finish
        self._cameras: list[CameraInput] | None = None
        self.elapsed_ms = 0.0

    def __call__(self) -> list[CameraInput]:
        if self._cameras is None:
            start = time.perf_counter()
            self._cameras = self._finish()
            self.elapsed_ms = (time.perf_counter() - start) * 1e3
        return self._cameras


class FrameAssembler:
    """Buffers the latest inputs and builds Frames. Thread-safe: ingestion and assembly may run on
    different threads."""

    def __init__(self, config: AssemblerConfig, transforms: TransformSource):
        self.config = config
        self.transforms = transforms
        self._lock = threading.Condition()
        self._history: deque[Sweep] = deque(maxlen=config.sweeps + 8)
        self._images: dict[str, deque[_Image]] = {
            name: deque(maxlen=config.images_per_camera) for name in config.camera_names}
        self._camera_info: dict[str, _CameraInfo] = {}
        self._calibration: dict[str, np.ndarray] = {}   # sensor frame -> T_base_sensor (overrides TF)
        self.calibration_source = "tf"
        self.last_stamp_us: int | None = None
        self.sweeps_received = 0
        # parts of the latest assemble() (worker thread): input wait, sweep accumulation, image decoding
        self.last_timings_ms: dict[str, float] = {}
        self._decoder = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode") \
            if config.decode_threads > 1 else None

    # ------------------------------------------------------------------ ingestion (callback threads)

    def add_lidar(self, stamp_us: int, frame_id: str, points: np.ndarray, received_ns: int = 0) -> Sweep:
        """Validate and buffer one scan; returns the :class:`Sweep` to hand to :meth:`assemble`.
        Raises :class:`InputRejected` for empty or shape-less clouds, duplicate stamps and unnamed frames."""
        if not frame_id:
            raise InputRejected("unknown_frame", "the cloud has an empty frame_id")
        clean, notes = sanitize_points(points, self.config.max_points)
        with self._lock:
            if self.last_stamp_us is not None and stamp_us == self.last_stamp_us:
                raise InputRejected("duplicate_stamp", f"a cloud with stamp {stamp_us} us was already received")
            if self.last_stamp_us is not None and stamp_us < self.last_stamp_us:
                notes.append("stamp_backwards")   # e.g. a bag restarted: older sweeps no longer apply
                self._history.clear()
            self.last_stamp_us = stamp_us
            self.sweeps_received += 1
            sweep = Sweep(stamp_us, frame_id, clean, received_ns, notes=notes)
            self._history.append(sweep)
        return sweep

    def add_image(self, camera: str, stamp_us: int, frame_id: str, decode: Callable[[], np.ndarray]) -> None:
        """Buffer one image; ``decode()`` -> H x W x 3 uint8 RGB is called only if a frame uses it."""
        if camera not in self._images:
            raise InputRejected("unknown_camera", f"{camera!r} is not one of {self.config.camera_names}")
        with self._lock:
            buffer = self._images[camera]
            if buffer and stamp_us < buffer[-1].stamp_us:
                buffer.clear()                    # time went backwards (bag restart)
            buffer.append(_Image(stamp_us, frame_id, decode, time.monotonic()))
            self._lock.notify_all()

    def set_camera_info(self, camera: str, K: np.ndarray, width: int, height: int, frame_id: str,
                        stamp_us: int | None = None) -> None:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or width <= 0 or height <= 0:
            raise InputRejected("bad_camera_info", f"{camera}: K={K.tolist()} size={width}x{height}")
        with self._lock:
            self._camera_info[camera] = _CameraInfo(K, int(width), int(height), frame_id, stamp_us)
            self._lock.notify_all()

    def set_calibration(self, T_base_sensor: dict[str, np.ndarray], source: str) -> bool:
        """Override extrinsics (sensor frame -> 4x4 T_base_sensor). Returns whether anything changed."""
        new = {name: np.asarray(T, dtype=np.float64).reshape(4, 4) for name, T in T_base_sensor.items()}
        with self._lock:
            changed = (new.keys() != self._calibration.keys()
                       or any(not np.allclose(new[k], self._calibration[k], atol=1e-9) for k in new))
            self._calibration = new
            self.calibration_source = source
        return changed

    def has_camera_info(self, camera: str) -> bool:
        return camera in self._camera_info

    def latest_image_stamp(self, camera: str) -> int | None:
        with self._lock:
            buffer = self._images.get(camera)
            return buffer[-1].stamp_us if buffer else None

    def pending_inputs(self, sweep: Sweep, now: float | None = None) -> list[str]:
        """Inputs of ``sweep``'s frame that are due but not here yet (what a tf2 message filter waits for):

        - ``tf_static``: the LiDAR's extrinsics are unknown (the static transforms are still in flight);
        - ``tf``: /tf is streaming but has no ego pose at or after the sweep's stamp yet;
        - during start-up (the first ``startup_sweeps`` sweeps): any input never received at all;
        - ``<camera>``: an image is due at or before the sweep (+ tolerance) and closer to it than the latest
          one buffered (e.g. stamped 0.5 ms before the sweep, still in flight) -- from the camera's period,
          or from a camera_info already received for an image not yet here; or an image is here but its
          camera_info is not. A camera silent for 3 periods (stopped) is not waited for.
        """
        now = time.monotonic() if now is None else now
        cfg = self.config
        tolerance_us = int(cfg.camera_wait_tolerance_s * 1e6)
        delay_us = int(cfg.max_camera_lidar_delay_s * 1e6)
        stamp_us = sweep.stamp_us
        pending = []
        try:
            self._T_base(sweep.frame_id)
        except LookupError:
            pending.append("tf_static")
        startup = self.sweeps_received <= cfg.startup_sweeps
        time_range = getattr(self.transforms, "time_range", None)
        if time_range is not None:
            span = time_range(cfg.base_frame)
            if (span is None and startup) or (span is not None and span[1] < stamp_us
                                               and stamp_us - span[1] < 1_000_000):
                pending.append("tf")
        with self._lock:
            for name, buffer in self._images.items():
                info = self._camera_info.get(name)
                last = buffer[-1] if buffer else None
                if startup and last is None and info is None:
                    pending.append(name)             # never heard of yet: give it a moment at start-up
                    continue
                if last is not None and info is None and abs(last.stamp_us - stamp_us) <= delay_us:
                    pending.append(name)             # the image is here, its camera_info not yet
                    continue
                if (info is not None and info.stamp_us is not None
                        and stamp_us - delay_us <= info.stamp_us <= stamp_us + tolerance_us
                        and (last is None or last.stamp_us < info.stamp_us)):
                    pending.append(name)             # camera_info announces an image not received yet
                    continue
                if len(buffer) < 2:
                    continue
                before = buffer[-2]
                period = last.stamp_us - before.stamp_us
                wall_period = max(last.arrival - before.arrival, 0.02)
                expected = last.stamp_us + period
                if (period > 0 and stamp_us - delay_us <= expected <= stamp_us + tolerance_us
                        and abs(expected - stamp_us) < abs(last.stamp_us - stamp_us)
                        and now - last.arrival < 3 * wall_period):
                    pending.append(name)
        return pending

    def wait_for_inputs(self, sweep: Sweep, timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` for :meth:`pending_inputs` to clear; returns what is still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self.pending_inputs(sweep)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return pending
            with self._lock:
                self._lock.wait(min(remaining, 0.002))

    # ------------------------------------------------------------------ assembly (worker thread)

    def _T_base(self, frame_id: str) -> np.ndarray:
        if frame_id in self._calibration:
            return self._calibration[frame_id]
        if frame_id == self.config.base_frame:
            return np.eye(4)
        return self.transforms.lookup(self.config.base_frame, frame_id, None)

    def _pose(self, sweep: Sweep, T_base_lidar: np.ndarray) -> np.ndarray | None:
        if sweep.T_map_lidar is None:
            try:
                T_map_base = self.transforms.lookup(self.config.map_frame, self.config.base_frame, sweep.stamp_us)
            except LookupError:
                return None
            sweep.T_map_lidar = T_map_base @ T_base_lidar
        return sweep.T_map_lidar

    def assemble(self, sweep: Sweep) -> tuple[Frame, list[str]]:
        """Build the Frame pivoted on ``sweep``. Returns ``(frame, notes)``; notes name what was left out
        (``no_ego_pose``, ``camera_masked:<CAM>:<reason>``, ...). Raises :class:`InputRejected` when the
        LiDAR frame itself is unknown."""
        frame, notes, cameras = self.assemble_deferred(sweep)
        cameras()
        self.last_timings_ms["images"] = cameras.elapsed_ms
        return frame, notes

    def assemble_deferred(self, sweep: Sweep) -> tuple[Frame, list[str], "PendingCameras"]:
        """:meth:`assemble` in two steps: the frame with its points and poses but no cameras yet
        (``cameras == []``), with this frame's images already decoding on the decoder threads; and
        ``cameras()``, which waits for them, sets ``frame.cameras`` and returns them (appending its notes
        to ``notes``). The node hands the first part to the model, whose LiDAR branch starts while the
        images finish decoding."""
        cfg = self.config
        notes: list[str] = []
        start = time.perf_counter()
        if cfg.input_wait_s > 0:
            for name in self.wait_for_inputs(sweep, cfg.input_wait_s):
                notes.append(f"input_late:{name}")
        waited = time.perf_counter()
        with self._lock:
            previous = [s for s in reversed(self._history) if s.stamp_us < sweep.stamp_us
                        and s.frame_id == sweep.frame_id
                        and (sweep.stamp_us - s.stamp_us) * 1e-6 <= cfg.max_sweep_gap_s][: cfg.sweeps - 1]
            images = {name: list(buf) for name, buf in self._images.items()}
            infos = dict(self._camera_info)
        decoding = []
        if self._decoder is not None:      # decode this frame's images in parallel, while the sweeps stack
            chosen = [self._closest(images[name], sweep.stamp_us) for name in cfg.camera_names]
            decoding = [self._decoder.submit(img.get) for img in chosen if img is not None]
        try:
            T_base_lidar = self._T_base(sweep.frame_id)
        except LookupError as err:
            raise InputRejected("unknown_frame", f"no transform {cfg.base_frame} -> {sweep.frame_id}: {err}"
                                ) from None
        T_map_lidar_now = self._pose(sweep, T_base_lidar)
        stacked_previous = []
        if T_map_lidar_now is None:
            if cfg.sweeps > 1:
                notes.append("no_ego_pose")
        else:
            for prev in previous:
                T_prev = self._pose(prev, T_base_lidar)
                if T_prev is None:
                    notes.append("no_ego_pose_previous_sweep")
                    continue
                stacked_previous.append((prev.points, prev.stamp_us, T_prev))
        pad_to = cfg.sweeps if cfg.pad_empty_sweeps and not previous else 1
        points = accumulate_sweeps(sweep.points, sweep.stamp_us, T_map_lidar_now, stacked_previous,
                                   cfg.remove_close_radius, pad_to)
        T_lidar_base = geo.invert_transform(T_base_lidar)
        accumulated = time.perf_counter()
        T_global_ego = None if T_map_lidar_now is None else T_map_lidar_now @ T_lidar_base
        frame = Frame(stamp_us=sweep.stamp_us, points=points, cameras=[], T_ego_lidar=T_base_lidar,
                      T_global_ego=T_global_ego, frame_id=sweep.frame_id)

        def finish() -> list[CameraInput]:
            for job in decoding:
                job.result()               # _Image.get() never raises: a bad JPEG decodes to None
            frame.cameras = [self._camera_input(name, images[name], infos.get(name), sweep, T_lidar_base,
                                                T_map_lidar_now, notes) for name in cfg.camera_names]
            return frame.cameras

        self.last_timings_ms = {"wait": (waited - start) * 1e3, "sweeps": (accumulated - waited) * 1e3}
        return frame, notes, PendingCameras(finish)

    def _closest(self, images: list[_Image], stamp_us: int) -> _Image | None:
        """The image closest in time to ``stamp_us`` within the delay (ties: the newer one)."""
        candidates = [img for img in images
                      if abs(img.stamp_us - stamp_us) * 1e-6 <= self.config.max_camera_lidar_delay_s]
        if not candidates:
            return None
        return min(candidates, key=lambda img: (abs(img.stamp_us - stamp_us), -img.stamp_us))

    def _camera_input(self, name: str, images: list[_Image], info: _CameraInfo | None, sweep: Sweep,
                      T_lidar_base: np.ndarray, T_map_lidar: np.ndarray | None, notes: list[str]
                      ) -> CameraInput:
        cfg = self.config

        def masked(reason: str, K=None, T=None) -> CameraInput:
            notes.append(f"camera_masked:{name}:{reason}")
            return CameraInput(name, None, np.eye(3) if K is None else K, np.eye(4) if T is None else T)

        if info is None:
            return masked("no_camera_info")
        frame_id = info.frame_id
        try:
            T_base_cam = self._T_base(frame_id)
        except LookupError:
            return masked("unknown_frame", info.K)
        T_lidar_cam = T_lidar_base @ T_base_cam
        chosen = self._closest(images, sweep.stamp_us)
        if chosen is None:
            return masked("no_recent_image", info.K, T_lidar_cam)
        image = chosen.get()
        if image is None:
            return masked("decode_error", info.K, T_lidar_cam)
        K = info.K
        reduction = cfg.image_reduction
        if image.shape[:2] != (info.height, info.width):
            reduced = (-(-info.height // reduction), -(-info.width // reduction))
            if reduction == 1 or image.shape[:2] != reduced:
                return masked("image_size_mismatch", info.K, T_lidar_cam)
            K = reduced_intrinsics(info.K, reduction)
        if cfg.camera_ego_motion and T_map_lidar is not None:
            try:
                T_map_base_cam = self.transforms.lookup(cfg.map_frame, cfg.base_frame, chosen.stamp_us)
                T_lidar_cam = geo.invert_transform(T_map_lidar) @ T_map_base_cam @ T_base_cam
            except LookupError:
                pass
        return CameraInput(name, image, K, T_lidar_cam, chosen.stamp_us)
