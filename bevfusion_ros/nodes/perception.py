"""perception_node: LiDAR + six cameras -> BEVFusion -> detections, markers, BEV map, diagnostics.

Thin wiring only (ARCHITECTURE.md §1): parameters, subscriptions, publishers, timers and message
conversion. Frame assembly, diagnostics and the drop-oldest worker live in ``bevfusion_ros.perception``;
the model in ``bevfusion_ros.runtime``.

Threads: the subscriptions run on a MultiThreadedExecutor in their own callback groups (LiDAR, cameras,
timers) and only convert and buffer; /tf and /tf_static have a node, executor and thread of their own
(``ros/tf_listener.py``, as tf2_ros's listener; /tf heard best effort); the worker thread assembles
frames with a queue of depth 1 (drop-oldest, every drop counted), so ingestion never waits for
inference, and hands them to the model in a child process (``model_process``, runtime/model_process.py):
in one process the model thread released the GIL in every torch op and had to take it back from the
executor threads, a convoy that made the model stage 20x slower at Python's default 5 ms switch interval
(p50 3.8 s instead of 0.16 s on 2 cores) and still ~3x slower at 4x replay with a 0.2 ms interval
(``gil_switch_interval``; still set: the worker thread's pickling and the callbacks share this process's GIL).

Input topics (remap with ``-r``): ``/LIDAR_TOP``, ``/CAM_*/image_rect_compressed`` (or ``/CAM_*/image_rect``
with ``compressed_images: false``), ``/CAM_*/camera_info``, ``/tf``, ``/tf_static``.
Outputs (in the node's namespace): ``~/detections``, ``~/detections_vision``, ``~/markers``,
``~/map/<class>``, ``~/frame_status`` (one JSON line per LiDAR sweep: processed / dropped / rejected,
latency, masked cameras: what the replay evaluation reads), and ``/diagnostics`` at 1 Hz.
Services: ``~/set_active`` (std_srvs/SetBool): lifecycle-style stop/start of processing.

Every bad input is counted in diagnostics and logged once per kind (rate-limited); the node never dies
on input.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from std_srvs.srv import SetBool

from bevfusion_ros.classes import CAMERA_NAMES, MAP_CLASSES
from bevfusion_ros.errors import UserError
from bevfusion_ros.model.config import load_config
from bevfusion_ros.model.map_fusion import TemporalMapFusion
from bevfusion_ros.nodes.run import run_node
from bevfusion_ros.paths import share_dir
from bevfusion_ros.perception.assembler import AssemblerConfig, FrameAssembler, InputRejected, Sweep
from bevfusion_ros.perception.calibration_file import load_extrinsics
from bevfusion_ros.perception.diagnostics import Diagnostics, LogLimiter
from bevfusion_ros.perception.worker import JustInTimeGate, LatestOnlyWorker, SweepRateLimit
from bevfusion_ros.ros import outputs
from bevfusion_ros.ros.camera_info import CameraInfoError
from bevfusion_ros.ros.ingest import LockedTransforms, MessageIngest
from bevfusion_ros.ros.pointcloud import PointCloudError
from bevfusion_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS
from bevfusion_ros.ros.tf_listener import TFListenerThread
from bevfusion_ros.ros.time import header_to_us, make_header

BACKENDS = ("torch", "onnxruntime", "tensorrt")
STATUS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)

# name -> (default, description). Types follow the defaults.
PARAMETERS: dict[str, tuple[object, str]] = {
    "model_config": ("models/bevfusion-tiny.yaml", "model config YAML (relative paths: package share folder)"),
    "checkpoint": ("models/bevfusion-tiny-synthetic.pt",
                   "model checkpoint; empty = untrained weights from the config (plumbing tests only)"),
    "backend": ("torch", f"inference back-end, one of {BACKENDS}"),
    "device": ("cpu", "torch device for the torch back-end (cpu, cuda)"),
    "num_threads": (1, "CPU threads for inference (torch / onnxruntime intra-op). 1 on a 2-core machine: the "
                       "model keeps one core, ingestion the other; with 2 the model's threads wait for each "
                       "other whenever ingestion takes a core (replay under load: e2e p50 2.2-2.5 s vs 0.28 s). "
                       "Raise it on machines with cores to spare (Orin: 4-6)"),
    "parallel_branches": (False, "run the camera branch on a second thread beside the LiDAR branch (for "
                                 "num_threads 1 with a core to spare)"),
    "model_process": (True, "run the model in a child process (runtime/model_process.py): it then never waits "
                            "for the GIL behind the executor threads; a crashed child is restarted on the next "
                            "frame. false: a thread of this process"),
    "gil_switch_interval": (0.0002, "s; Python's thread switch interval for this process "
                                    "(sys.setswitchinterval; 0 = keep Python's 0.005). With model_process: false the "
                                    "model thread gives up the GIL in every torch op and must win it back from the "
                                    "executor threads: at 5 ms each of a frame's hundreds of op boundaries can wait "
                                    "that long; with the child process it keeps the worker's hand-offs short"),
    "reliable_sensors": (False, "subscribe to the sensors RELIABLE instead of best effort (only matches reliable "
                                "publishers such as the bag player; large best-effort messages can be lost whole "
                                "under CPU load)"),
    "image_decode_reduction": (0, "decode JPEGs at 1/r scale (1, 2, 4, 8; K scaled to match): 0 = the largest r "
                                  "that still gives the model its input resolution; 1 = full size, as offline"),
    "compressed_images": (True, "subscribe to /CAM_*/image_rect_compressed (true) or raw /CAM_*/image_rect"),
    "camera_names": (list(CAMERA_NAMES), "camera names, in the model's order"),
    "sweeps": (0, "LiDAR sweeps per frame incl. the current one; 0 = the model config's lidar.sweeps"),
    "max_camera_lidar_delay": (0.1, "s; a camera whose closest image is further from the LiDAR stamp is masked"),
    "max_input_wait": (0.05, "s; longest wait for inputs of a sweep that are due but still in flight: its "
                              "transforms, a camera image stamped just before it (0 = never wait)"),
    "camera_ego_motion": (False, "T_lidar_cam through the ego poses at the camera and LiDAR stamps, as the "
                                 "dataset does (exact, but the bev_pool plan is rebuilt every frame); false: "
                                 "static extrinsics, plan cached until the calibration changes"),
    "max_rate": (0.0, "Hz; process at most this many sweeps per second of sensor time, each as it arrives "
                      "(perception/worker.py SweepRateLimit); the others are counted as dropped "
                      "(rate_limit) but still accumulated as earlier sweeps. 0 = as many as the model takes, "
                      "each after waiting for the one before (more frames, more latency)"),
    "max_sweep_gap": (1.0, "s; previous sweeps older than this are not accumulated"),
    "max_points": (400000, "clouds with more points are decimated to this many (counted as oversized_cloud)"),
    "base_frame": ("base_link", "vehicle frame (tf_static parent of the sensors)"),
    "map_frame": ("map", "world frame of the ego pose in /tf"),
    "calibration_file": ("", "calib/*.yaml overriding /tf_static extrinsics; re-read when it changes"),
    "publish_markers": (True, "publish ~/markers"),
    "publish_map": (True, "publish ~/map/<class> occupancy grids"),
    "map_fusion": (True, "fuse the map over time as the model YAML's map.temporal_fusion says; false: off "
                         "(single-frame maps)"),
    "marker_score_threshold": (0.3, "minimum score of a box drawn in ~/markers"),
    "stale_after": (1.0, "s; an input silent this long while the LiDAR runs is reported as WARN"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
    "log_period": (10.0, "s; each kind of bad input is logged at most once per period"),
    "autostart": (True, "start processing at once (else wait for ~/set_active true)"),
    "warmup": (True, "run the model once on a dummy LiDAR-only frame at start-up (first-frame latency)"),
}


@dataclass
class Job:
    sweep: Sweep
    received_ns: int
    ingest_ms: float
    notes: list[str] = field(default_factory=list)
    # set by the assembly stage for the model stage
    frame: object = None
    assemble_ms: float = 0.0
    assemble_parts_ms: dict = field(default_factory=dict)
    assembled_at: float = 0.0               # time.perf_counter()
    cameras: object = None                  # assembler.PendingCameras: finished by the model stage
    assembly_notes: list[str] = field(default_factory=list)


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else share_dir() / p


def load_pipeline(params: dict):
    """The configured model: a ModelProcess (child process) or an in-process PerceptionPipeline (imported
    lazily: torch is heavy, and with ``model_process`` this process never imports it)."""
    checkpoint = str(resolve(params["checkpoint"])) if params["checkpoint"] else None
    config = str(resolve(params["model_config"]))
    if params["model_process"]:
        from bevfusion_ros.runtime.model_process import ModelProcess, ModelProcessConfig
        return ModelProcess(ModelProcessConfig(config, checkpoint, backend=params["backend"],
                                               device=params["device"], num_threads=int(params["num_threads"]),
                                               parallel_branches=bool(params["parallel_branches"])))
    from bevfusion_ros.runtime.pipeline import PerceptionPipeline
    return PerceptionPipeline(config, checkpoint, backend=params["backend"], device=params["device"],
                              parallel_branches=bool(params["parallel_branches"]))


def _model_config(config_path: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load(config_path.read_text())
    except Exception as err:  # noqa: BLE001
        raise UserError(f"cannot read model config {config_path}: {err}") from None


def model_sweeps(config_path: Path) -> int:
    try:
        return int(_model_config(config_path)["lidar"]["sweeps"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"model config {config_path} has no usable lidar.sweeps ({err})") from None


def auto_image_reduction(config_path: Path, nominal_width: int = 1600) -> int:
    """Largest JPEG reduction r in (1, 2, 4, 8) whose decoded width still covers what the model keeps of a
    ``nominal_width`` image (camera.resize_test x camera.source_width pixels across)."""
    camera = (_model_config(config_path) or {}).get("camera") or {}
    try:
        needed = float(camera["resize_test"]) * float(camera.get("source_width", nominal_width))
    except (KeyError, TypeError, ValueError):
        return 1
    return max(r for r in (1, 2, 4, 8) if nominal_width / r >= needed)


class PerceptionNode(Node):
    def __init__(self, node_name: str = "perception", *, pipeline=None, **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = self._declare_parameters()
        p = self.params
        if p["gil_switch_interval"] > 0:
            sys.setswitchinterval(p["gil_switch_interval"])
        if pipeline is None:
            if not p["model_process"]:
                try:
                    import torch
                    torch.set_num_threads(int(p["num_threads"]))
                except ImportError:
                    pass
            pipeline = load_pipeline(p)
        self.pipeline = pipeline
        if p["warmup"]:
            self._warmup()
        self._plan_rebuilds_base = getattr(self.pipeline, "plan_rebuilds", 0)
        sweeps = p["sweeps"] or model_sweeps(resolve(p["model_config"]))
        self.camera_names = tuple(p["camera_names"])
        reduction = p["image_decode_reduction"] or auto_image_reduction(resolve(p["model_config"]))
        self.tf = LockedTransforms()
        self.assembler = FrameAssembler(AssemblerConfig(
            sweeps=sweeps, max_camera_lidar_delay_s=p["max_camera_lidar_delay"],
            max_sweep_gap_s=p["max_sweep_gap"], input_wait_s=p["max_input_wait"],
            camera_ego_motion=bool(p["camera_ego_motion"]), image_reduction=reduction, max_points=p["max_points"], camera_names=self.camera_names,
            base_frame=p["base_frame"], map_frame=p["map_frame"]), self.tf)
        self.ingest = MessageIngest(self.assembler, self.tf)
        self.diag = Diagnostics(self.camera_names, stale_after_s=p["stale_after"], backend=p["backend"])
        self.diag.set_info("sweeps", sweeps)
        # Map output fused over time (model YAML map.temporal_fusion), here in the node's process: it needs
        # the frames in order with their poses, and no torch.
        fusion = load_config(resolve(p["model_config"])).map.temporal_fusion
        self.map_fusion = TemporalMapFusion(fusion if p["map_fusion"] else replace(fusion, enabled=False))
        self.diag.set_info("image_decode_reduction", reduction)
        self.log_limiter = LogLimiter(p["log_period"])
        self.rate_limit = SweepRateLimit(p["max_rate"])
        self.active = bool(p["autostart"])
        self._calib_mtime: float | None = None

        # ---- publishers
        try:
            from bevfusion_msgs.msg import DetectedObjects3D
            self.pub_objects = self.create_publisher(DetectedObjects3D, "~/detections", OUTPUT_QOS)
        except ImportError:
            self.pub_objects = None
            self.get_logger().warning("bevfusion_msgs is not built (make setup): ~/detections is off")
        try:
            from vision_msgs.msg import Detection3DArray
            self.pub_vision = self.create_publisher(Detection3DArray, "~/detections_vision", OUTPUT_QOS)
        except ImportError:
            self.pub_vision = None
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from visualization_msgs.msg import MarkerArray
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS)
        self.pub_maps = {name: self.create_publisher(OccupancyGrid, f"~/map/{name}", OUTPUT_QOS)
                         for name in MAP_CLASSES}
        self.pub_status = self.create_publisher(String, "~/frame_status", STATUS_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)

        # ---- subscriptions, each kind in its own callback group
        lidar_group = MutuallyExclusiveCallbackGroup()
        camera_group = ReentrantCallbackGroup()
        timer_group = MutuallyExclusiveCallbackGroup()
        sensor_qos = SENSOR_QOS
        if p["reliable_sensors"]:
            sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SENSOR_QOS.depth,
                                    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self.create_subscription(PointCloud2, "/LIDAR_TOP", self._on_lidar, sensor_qos,
                                 callback_group=lidar_group)
        image_type, suffix = (CompressedImage, "image_rect_compressed") if p["compressed_images"] \
            else (Image, "image_rect")
        for name in self.camera_names:
            self.create_subscription(image_type, f"/{name}/{suffix}",
                                     lambda msg, cam=name: self._on_image(cam, msg), sensor_qos,
                                     callback_group=camera_group)
            self.create_subscription(CameraInfo, f"/{name}/camera_info",
                                     lambda msg, cam=name: self._on_camera_info(cam, msg), sensor_qos,
                                     callback_group=camera_group)
        self.tf_listener = None
        try:   # on a node and thread of its own, so /tf never queues behind the sensors (ros/tf_listener.py)
            self.tf_listener = TFListenerThread(self, self._on_tf)
        except ImportError:
            self.get_logger().warning("tf2_msgs is not built (make setup): extrinsics only from calibration_file")
        self.create_service(SetBool, "~/set_active", self._on_set_active, callback_group=timer_group)
        self.create_timer(p["diagnostics_period"], self._on_diagnostics_timer, callback_group=timer_group)

        self._check_calibration_file()
        # two stages, each a depth-1 drop-oldest queue: assembly starts on the newest sweep just in time for
        # the model (perception/worker.py JustInTimeGate), so assembly of frame n+1 overlaps inference of n
        self.model_worker = LatestOnlyWorker(self._infer, on_drop=self._on_drop, on_error=self._on_worker_error,
                                             name="perception-model")
        self.worker = LatestOnlyWorker(self._assemble, on_drop=self._on_drop, on_error=self._on_worker_error,
                                       name="perception-assemble", gate=JustInTimeGate(self.model_worker))
        self.secondary = LatestOnlyWorker(self._publish_secondary, name="perception-secondary-outputs",
                                          on_drop=lambda item: self.diag.count("secondary_outputs_skipped"),
                                          on_error=lambda item, err: self._bad_input("secondary_outputs_error",
                                                                                     str(err)))
        self.get_logger().info(
            f"perception ready: backend={p['backend']} sweeps={sweeps} cameras={len(self.camera_names)} "
            f"(JPEGs decoded at 1/{reduction}) "
            f"{'compressed' if p['compressed_images'] else 'raw'} images, "
            f"{'active' if self.active else 'inactive (call ~/set_active)'}")

    def _warmup(self) -> None:
        """One inference on a dummy frame (random points, every camera masked): the first real frame then
        does not pay for lazy initialisation. Failures here are the model's, reported at start-up."""
        import numpy as np

        from bevfusion_ros.frame import CameraInput, Frame

        rng = np.random.default_rng(0)
        points = np.concatenate([rng.uniform(-40, 40, (2000, 2)), rng.uniform(-2, 2, (2000, 1)),
                                 rng.uniform(0, 100, (2000, 1)), np.zeros((2000, 1))], 1).astype(np.float32)
        K = np.array([[1000.0, 0, 800], [0, 1000.0, 450], [0, 0, 1]])
        cameras = [CameraInput(name, None, K, np.eye(4)) for name in self.params["camera_names"]]
        start = time.perf_counter()
        try:
            self.pipeline.infer(Frame(stamp_us=0, points=points, cameras=cameras))
        except Exception as err:  # noqa: BLE001 - a model that cannot run at all is a start-up error
            raise UserError(f"the model failed on a warm-up frame ({type(err).__name__}: {err}); "
                            f"check model_config/checkpoint/backend (warmup:=false skips this check)") from None
        self.get_logger().info(f"warm-up inference took {(time.perf_counter() - start) * 1e3:.0f} ms")

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict:
        values = {}
        problems = []
        for name, (default, description) in PARAMETERS.items():
            # a float parameter also takes an integer (max_rate:=5), as a user would write it
            values[name] = self.declare_parameter(name, default, ParameterDescriptor(
                description=description, dynamic_typing=isinstance(default, float))).value
            if isinstance(default, float):
                try:
                    values[name] = float(values[name])
                except (TypeError, ValueError):
                    problems.append(f"{name} must be a number, got {values[name]!r}")
                    values[name] = default
        if values["backend"] not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {values['backend']!r}")
        if int(values["sweeps"]) < 0:
            problems.append(f"sweeps must be >= 0, got {values['sweeps']}")
        for key in ("max_camera_lidar_delay", "max_sweep_gap", "stale_after", "diagnostics_period", "log_period"):
            if not float(values[key]) > 0 and not (key == "max_camera_lidar_delay" and values[key] == 0):
                problems.append(f"{key} must be > 0, got {values[key]}")
        if not 0 <= float(values["max_input_wait"]) <= 0.5:
            problems.append(f"max_input_wait must be in [0, 0.5] s, got {values['max_input_wait']}")
        if int(values["image_decode_reduction"]) not in (0, 1, 2, 4, 8):
            problems.append(f"image_decode_reduction must be 0 (auto), 1, 2, 4 or 8, got "
                            f"{values['image_decode_reduction']}")
        if not 0 <= float(values["gil_switch_interval"]) <= 0.1:
            problems.append(f"gil_switch_interval must be in [0, 0.1] s, got {values['gil_switch_interval']}")
        if not 0 <= float(values["max_rate"]) <= 1000:
            problems.append(f"max_rate must be in [0, 1000] Hz, got {values['max_rate']}")
        if int(values["max_points"]) < 1000:
            problems.append(f"max_points must be >= 1000, got {values['max_points']}")
        if not values["camera_names"] or any(not str(c) for c in values["camera_names"]):
            problems.append("camera_names must be a non-empty list of names")
        config = resolve(values["model_config"])
        if not config.is_file():
            problems.append(f"model_config {config} does not exist")
        if values["checkpoint"] and not resolve(values["checkpoint"]).is_file():
            problems.append(f"checkpoint {resolve(values['checkpoint'])} does not exist "
                            f"(train one, or set checkpoint:='' for untrained weights)")
        if values["calibration_file"] and not resolve(values["calibration_file"]).is_file():
            problems.append(f"calibration_file {resolve(values['calibration_file'])} does not exist")
        if problems:
            raise UserError("bad parameter: " + "; ".join(problems))
        values["camera_names"] = [str(c) for c in values["camera_names"]]
        return values

    # ------------------------------------------------------------------ logging / counting

    def _bad_input(self, reason: str, detail: str) -> None:
        self.diag.count(reason)
        should_log, suppressed = self.log_limiter.check(reason)
        if should_log:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self.get_logger().warning(f"{reason}: {detail}{more}")

    def _publish_status(self, stamp_us: int, status: str, **extra) -> None:
        self.pub_status.publish(String(data=json.dumps({"stamp_us": int(stamp_us), "status": status, **extra})))

    # ------------------------------------------------------------------ ingestion callbacks

    def _on_lidar(self, msg: PointCloud2, info) -> None:
        # "received" = when the middleware took the message in (rmw timestamp, system clock), so time spent
        # waiting for an executor thread counts toward the end-to-end latency
        now_ns = time.time_ns()
        received_ns = int(info.get("received_timestamp", 0) or 0) if isinstance(info, dict) else 0
        if not 0 < now_ns - received_ns < 10_000_000_000:
            received_ns = now_ns
        start = time.perf_counter()
        self.diag.tick("lidar")
        try:
            stamp_us = header_to_us(msg.header)
        except Exception:  # noqa: BLE001
            stamp_us = 0
        if not self.active:
            self.diag.count("inactive_skipped")
            return
        try:
            sweep, notes = self.ingest.lidar(msg, received_ns)
        except PointCloudError as err:
            self._bad_input("bad_cloud", str(err))
            self._publish_status(stamp_us, "rejected", reason="bad_cloud")
            return
        except InputRejected as err:
            self._bad_input(err.reason, f"LiDAR {stamp_us} us: {err.detail}")
            self._publish_status(stamp_us, "rejected", reason=err.reason)
            return
        for note in notes:
            self._bad_input(note, f"LiDAR {stamp_us} us ({msg.header.frame_id}): {note.replace('_', ' ')}")
        ingest_ms = (time.perf_counter() - start) * 1e3
        if not self.rate_limit.accept(sweep.stamp_us):
            self.diag.frame_dropped("rate_limit")   # still accumulated: ingest.lidar kept it as a sweep
            self._publish_status(sweep.stamp_us, "dropped", reason="rate_limit")
            return
        self.worker.submit(Job(sweep, received_ns, ingest_ms, notes))

    def _on_image(self, camera: str, msg) -> None:
        self.diag.tick(camera)
        if not self.active:
            return
        try:
            self.ingest.image(camera, msg)
        except InputRejected as err:
            self._bad_input(err.reason, err.detail)

    def _on_camera_info(self, camera: str, msg: CameraInfo) -> None:
        try:
            self.ingest.camera_info(camera, msg)
        except (CameraInfoError, InputRejected) as err:
            self._bad_input("bad_camera_info", f"{camera}: {err}")

    def _on_tf(self, msg, static: bool) -> None:
        try:
            self.ingest.tf(msg, static)
        except (ValueError, LookupError) as err:
            self._bad_input("bad_tf", f"{'/tf_static' if static else '/tf'}: {err}")

    def _on_set_active(self, request, response):
        self.active = bool(request.data)
        response.success, response.message = True, "active" if self.active else "inactive"
        self.get_logger().info(f"processing {response.message}")
        return response

    def _on_diagnostics_timer(self) -> None:
        self._check_calibration_file()
        self.diag.set_info("plan_rebuilds", getattr(self.pipeline, "plan_rebuilds", 0) - self._plan_rebuilds_base)
        if hasattr(self.pipeline, "restarts"):
            self.diag.set_info("model_process_restarts", self.pipeline.restarts)
        self.diag.set_info("active", self.active)
        if self.map_fusion.config.enabled:
            self.diag.set_info("map_fusion_resets", self.map_fusion.resets)
            self.diag.set_info("map_fusion_last_reset", self.map_fusion.last_reset_reason or "none")
        self.pub_diag.publish(outputs.diagnostic_array_msg(
            self.diag.status(), self.get_clock().now().to_msg(), hardware_id=self.get_name()))

    def _check_calibration_file(self) -> None:
        path = self.params["calibration_file"]
        if not path:
            return
        path = resolve(path)
        try:
            mtime = path.stat().st_mtime
        except OSError as err:
            self._bad_input("calibration_file", f"{path}: {err}")
            return
        if mtime == self._calib_mtime:
            return
        self._calib_mtime = mtime
        try:
            _, extrinsics = load_extrinsics(path)
        except UserError as err:
            self._bad_input("calibration_file", str(err))
            return
        if self.assembler.set_calibration(extrinsics, str(path)):
            self.diag.set_info("calibration", str(path))
            self.get_logger().info(f"calibration loaded from {path} ({len(extrinsics)} sensors)")

    # ------------------------------------------------------------------ worker thread

    def _on_drop(self, job: Job) -> None:
        self.diag.frame_dropped("queue_overflow")
        self._publish_status(job.sweep.stamp_us, "dropped", reason="queue_overflow")

    def _on_worker_error(self, job: Job, err: BaseException) -> None:
        self.diag.frame_dropped("model_error")
        self._publish_status(job.sweep.stamp_us, "dropped", reason="model_error", detail=str(err)[:200])
        should_log, suppressed = self.log_limiter.check("model_error")
        if should_log:
            self.get_logger().error(f"frame {job.sweep.stamp_us} us failed: {type(err).__name__}: {err}")

    def _assemble(self, job: Job) -> None:
        """Assembly stage: the Frame of the newest sweep, handed to the model stage (just in time)."""
        sweep = job.sweep
        start = time.perf_counter()
        try:
            frame, notes, cameras = self.assembler.assemble_deferred(sweep)
        except InputRejected as err:
            self._bad_input(err.reason, f"LiDAR {sweep.stamp_us} us: {err.detail}")
            self.diag.frame_dropped(err.reason)
            self._publish_status(sweep.stamp_us, "dropped", reason=err.reason)
            return
        for note in notes:
            self._bad_input(note, f"LiDAR {sweep.stamp_us} us: {note}")
        # the cameras are finished by the model stage (the LiDAR branch starts while they decode); their
        # notes are appended to assembly_notes then
        job.frame, job.cameras, job.assembly_notes = frame, cameras, notes
        job.notes = job.notes + notes
        job.assembled_at = time.perf_counter()
        job.assemble_ms = (job.assembled_at - start) * 1e3
        job.assemble_parts_ms = dict(self.assembler.last_timings_ms)
        self.model_worker.submit(job)

    def _infer(self, job: Job) -> None:
        """Model stage: inference (in the model's process) and publishing."""
        sweep, frame = job.sweep, job.frame
        started = time.perf_counter()
        header = make_header(sweep.stamp_us, sweep.frame_id)
        published_detections: dict[str, float] = {}

        def publish_detections(detections) -> None:
            """Called by the pipeline as soon as the detections exist, while the map head may still run."""
            published_detections["at"] = time.perf_counter()
            if self.pub_objects is not None:
                self.pub_objects.publish(outputs.detected_objects_msg(detections, header))
            published_detections["end_to_end_ms"] = (time.time_ns() - job.received_ns) * 1e-6
            # vision_msgs and markers (hundreds of Python message objects) on their own thread, off the model's
            self.secondary.submit((detections, header))

        seen_notes = len(job.assembly_notes)
        try:
            result = self.pipeline.infer(frame, on_detections=publish_detections, cameras=job.cameras)
        finally:
            for note in job.assembly_notes[seen_notes:]:      # the cameras' (masked, decode errors)
                self._bad_input(note, f"LiDAR {sweep.stamp_us} us: {note}")
                job.notes.append(note)
        job.assemble_parts_ms["images"] = job.cameras.elapsed_ms
        if not published_detections:  # a frame the pipeline answered without running the heads
            publish_detections(result.detections)
        inferred = published_detections["at"]
        end_to_end_ms = published_detections["end_to_end_ms"]
        # the map after the detections: the rest of the map head and its time fusion (~3-9 ms) need not
        # delay them
        if self.params["publish_map"] and result.bev_map is not None:
            bev_map = result.bev_map
            if self.map_fusion.config.enabled:
                fusion_start = time.perf_counter()
                T_global_lidar = None if frame.T_global_ego is None else frame.T_global_ego @ frame.T_ego_lidar
                bev_map = self.map_fusion.update(bev_map, T_global_lidar, sweep.stamp_us)
                result.timings_ms["map_fusion"] = (time.perf_counter() - fusion_start) * 1e3
            for name, grid in outputs.occupancy_grids(bev_map, header).items():
                self.pub_maps[name].publish(grid)
        published = time.perf_counter()
        stages = {"ingest": job.ingest_ms, "assemble": job.assemble_ms,
                  "handoff": (started - job.assembled_at) * 1e3,
                  # model: until the detections are out; publish: the rest (the map's remainder, fusion, grids)
                  "model": (inferred - started) * 1e3, "publish": (published - inferred) * 1e3,
                  "end_to_end": end_to_end_ms}
        for stage, ms in stages.items():
            self.diag.record_latency(stage, ms)
        masked = frame.masked_cameras
        self.diag.frame_processed(masked)
        self._publish_status(sweep.stamp_us, "processed", latency_ms={k: round(v, 3) for k, v in stages.items()},
                             model_ms=result.timings_ms, assemble_ms=job.assemble_parts_ms,
                             masked=masked, points=int(len(frame.points)),
                             detections=len(result.detections), notes=sorted(set(job.notes)))

    def _publish_secondary(self, item) -> None:
        detections, header = item
        if self.pub_vision is not None:
            self.pub_vision.publish(outputs.detection3d_array_msg(detections, header))
        if self.params["publish_markers"]:
            self.pub_markers.publish(outputs.markers_msg(detections, header, self.params["marker_score_threshold"]))

    def destroy_node(self):
        if getattr(self, "tf_listener", None) is not None:
            self.tf_listener.close()
        for worker in (getattr(self, "worker", None), getattr(self, "model_worker", None),
                       getattr(self, "secondary", None)):
            if worker is not None:     # absent when construction failed part-way
                worker.stop()
        close = getattr(getattr(self, "pipeline", None), "close", None)
        if close is not None:          # the model's child process
            close()
        return super().destroy_node()


# Executor threads for the sensor callbacks. They are short and hold the GIL, so more threads mostly add
# contention with the model thread: 60 s soaks on 2 cores, 2 threads vs 4, end-to-end p99 at 4x 674-708 ms
# vs 734-751 ms, at 1x 289 vs 322 ms (1 thread: 784 ms at 4x). BEVFUSION_EXECUTOR_THREADS overrides it.
EXECUTOR_THREADS = 2


def main(args: list[str] | None = None) -> int:
    threads = int(os.environ.get("BEVFUSION_EXECUTOR_THREADS", str(EXECUTOR_THREADS)))
    return run_node(PerceptionNode, "perception_node", threads, args)


if __name__ == "__main__":
    sys.exit(main())
