"""calibration_node: SemAlign camera-LiDAR calibration as a ROS 2 node.

Thin wiring (ARCHITECTURE.md §1): parameters, subscriptions, the service, publishers, message conversion.
Collecting frames, running SemAlign, deciding and persisting live in ``bevfusion_ros.calibration``
(:class:`~bevfusion_ros.calibration.session.CalibrationSession`).

Inputs (remap with ``-r``): ``/LIDAR_TOP`` (PointCloud2), ``/CAM_*/image_rect_compressed``,
``/CAM_*/camera_info``, and 3D boxes in the LiDAR frame on ``detections_topic``
(bevfusion_msgs/DetectedObjects3D, e.g. the perception node's ``~/detections``). Live frames need an image
segmentation model (``image_model``: ONNX, classes mapped by ``class_map`` onto the 10 detection classes +
ground, see docs/calibration.md): LiDAR points get labels from the boxes and a ground-plane fit, pixels from
the model. Without a model the node collects nothing live; frames can still be handed to
``node.session.add_frame`` (tests, offline tools).

Service: ``~/calibrate`` (std_srvs/Trigger) runs SemAlign on the last ``frames`` frames; with
``calibrate_on_start`` it also runs once as soon as enough frames are collected.
Outputs: ``~/result`` (tf2_msgs/TFMessage, transient local: base_frame -> camera transforms in force after
the last run), ``/tf_static`` (the whole rig when a calibration is applied), ``/diagnostics`` (loss,
prior loss, confidence, duration, decision). The rig file ``calib/<rig>.yaml`` is rewritten atomically
(previous file kept as ``.bak``) only for an applied result; a result that does not beat the current
calibration's loss is refused and nothing changes.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from bevfusion_ros import geometry as geo
from bevfusion_ros.calibration import calib_io
from bevfusion_ros.calibration.semalign import Calibrator
from bevfusion_ros.calibration.session import CalibrationSession, SessionOutcome
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.errors import UserError
from bevfusion_ros.nodes.run import run_node
from bevfusion_ros.paths import share_dir
from bevfusion_ros.ros.qos import CALIBRATION_QOS, OUTPUT_QOS, SENSOR_QOS, TF_STATIC_PUBLISHER_QOS
from bevfusion_ros.ros.time import header_to_us

try:
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - built by scripts/build_interfaces.sh (make setup)
    TFMessage = None

PARAMETERS: dict[str, tuple[object, str]] = {
    "rig": ("nuscenes", "rig name: the calibration file is calib/<rig>.yaml unless calibration_file is set"),
    "calibration_file": ("", "rig calibration YAML to read and rewrite (default: share calib/<rig>.yaml)"),
    "frames": (5, "synchronized frames SemAlign uses (the last N collected)"),
    "calibrate_on_start": (False, "run once as soon as `frames` frames are collected"),
    "auto_apply": (True, "write and publish an accepted result (off: report it as a proposal only)"),
    "mode": ("rig", "rig: one LiDAR-to-rig correction seen by all cameras (measured 0.05 deg / 1.9 cm on "
                    "synthetic data); per_camera: each T_cam_lidar on its own (0.22 deg / 6.8 cm)"),
    "min_improvement": (0.0, "relative loss improvement a result needs over the current calibration"),
    "camera_names": (list(CAMERA_NAMES), "cameras to calibrate"),
    "lidar_topic": ("/LIDAR_TOP", "sensor_msgs/PointCloud2 in the LiDAR frame"),
    "image_topic_suffix": ("image_rect_compressed", "images on /<camera>/<suffix> (CompressedImage)"),
    "detections_topic": ("/perception/detections", "bevfusion_msgs/DetectedObjects3D in the LiDAR frame"),
    "image_model": ("", "ONNX semantic segmentation model for live image labels ('' = no live collection)"),
    "class_map": ([0], "model class -> calibration class pairs, flattened [m0, c0, m1, c1, ...]; [0] = identity"),
    "max_camera_lidar_delay": (0.1, "s: newest image per camera must be this close to the sweep"),
    "collect_period": (1.0, "s: minimum time between two collected frames"),
    "threads": (2, "torch CPU threads for SemAlign"),
    "config_file": ("", "YAML with CalibrationConfig overrides (search rounds, refinement stages, levels ...)"),
    "base_frame": ("base_link", "parent frame of the sensors on /tf_static"),
}


class CalibrationNode(Node):
    def __init__(self, node_name: str = "calibration", **kwargs):
        super().__init__(node_name, **kwargs)
        p = self.params = self._declare_parameters()
        import torch
        torch.set_num_threads(int(p["threads"]))
        from bevfusion_ros.calibration.evaluate import load_config
        config = load_config(p["config_file"] or None, mode=p["mode"], min_improvement=float(p["min_improvement"]))
        self.calib_path = Path(p["calibration_file"]) if p["calibration_file"] else share_dir() / "calib" / f"{p['rig']}.yaml"
        self.session = CalibrationSession(self.calib_path, Calibrator(config), int(p["frames"]),
                                          auto_apply=bool(p["auto_apply"]), cameras=list(p["camera_names"]))
        self.lidar_frame = "LIDAR_TOP"
        try:
            self.lidar_frame = self.session.current().lidar_frame
        except calib_io.CalibrationFileError as err:
            self.get_logger().error(f"current calibration unusable (calibration will be refused): {err}")
        self.last_outcome: SessionOutcome | None = None
        self.runs = 0
        self._lock = threading.Lock()
        self._started_once = False

        self.result_pub = self.create_publisher(TFMessage, "~/result", CALIBRATION_QOS) if TFMessage else None
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", TF_STATIC_PUBLISHER_QOS) if TFMessage else None
        if TFMessage is None:
            self.get_logger().warning("tf2_msgs is not built (make setup): results go to the YAML and /diagnostics only")
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self.service = self.create_service(Trigger, "~/calibrate", self._on_trigger,
                                           callback_group=MutuallyExclusiveCallbackGroup())
        self._live = self._setup_live_inputs()
        if p["calibrate_on_start"]:
            self._start_timer = self.create_timer(0.5, self._maybe_start, callback_group=MutuallyExclusiveCallbackGroup())

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict:
        values = {}
        for name, (default, description) in PARAMETERS.items():
            values[name] = self.declare_parameter(name, default, ParameterDescriptor(description=description)).value
        problems = []
        if int(values["frames"]) < 1:
            problems.append(f"frames must be >= 1, got {values['frames']}")
        if values["mode"] not in ("per_camera", "rig"):
            problems.append(f"mode must be per_camera or rig, got {values['mode']!r}")
        if not 0.0 <= float(values["min_improvement"]) < 1.0:
            problems.append(f"min_improvement must be in [0, 1), got {values['min_improvement']}")
        if not values["camera_names"]:
            problems.append("camera_names must not be empty")
        class_map = list(values["class_map"])
        if class_map != [0] and len(class_map) % 2:
            problems.append("class_map must hold pairs [model_class, calibration_class, ...]")
        if values["config_file"] and not Path(values["config_file"]).is_file():
            problems.append(f"config_file {values['config_file']} does not exist")
        if values["image_model"] and not Path(values["image_model"]).is_file():
            problems.append(f"image_model {values['image_model']} does not exist")
        if problems:
            raise UserError("bad parameter: " + "; ".join(problems))
        return values

    # ------------------------------------------------------------------ live collection

    def _setup_live_inputs(self):
        p = self.params
        if not p["image_model"]:
            self.get_logger().info("no image_model: live frames are not collected (frames can be added directly)")
            return None
        from bevfusion_ros.calibration.providers import BoxLabelProvider, OnnxSegmentationProvider
        from bevfusion_ros.ros.camera_info import camera_info_to_intrinsics
        from bevfusion_ros.ros.image import compressed_image_to_rgb
        from bevfusion_ros.ros.outputs import detections_from_objects_msg
        from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
        from bevfusion_msgs.msg import DetectedObjects3D
        pairs = list(p["class_map"])
        class_map = None if pairs == [0] else {int(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        live = {"segmenter": OnnxSegmentationProvider(p["image_model"], class_map), "boxes": BoxLabelProvider(),
                "images": {}, "K": {}, "detections": None, "last": 0.0,
                "to_rgb": compressed_image_to_rgb, "to_K": camera_info_to_intrinsics,
                "to_boxes": detections_from_objects_msg, "to_xyz": pointcloud2_to_xyzi}
        group = MutuallyExclusiveCallbackGroup()
        for cam in p["camera_names"]:
            self.create_subscription(CompressedImage, f"/{cam}/{p['image_topic_suffix']}",
                                     lambda m, c=cam: live["images"].__setitem__(c, m), SENSOR_QOS, callback_group=group)
            self.create_subscription(CameraInfo, f"/{cam}/camera_info",
                                     lambda m, c=cam: live["K"].__setitem__(c, m), SENSOR_QOS, callback_group=group)
        self.create_subscription(DetectedObjects3D, p["detections_topic"],
                                 lambda m: live.__setitem__("detections", m), OUTPUT_QOS, callback_group=group)
        self.create_subscription(PointCloud2, p["lidar_topic"], self._on_lidar, SENSOR_QOS, callback_group=group)
        return live

    def _on_lidar(self, msg) -> None:
        live, p = self._live, self.params
        now = time.monotonic()
        if now - live["last"] < float(p["collect_period"]) or live["detections"] is None:
            return
        stamp = header_to_us(msg.header)
        try:
            from bevfusion_ros.calibration.providers import CameraView
            points, _ = live["to_xyz"](msg)
            det = live["detections"]
            if abs(header_to_us(det.header) - stamp) > 1e6 * float(p["max_camera_lidar_delay"]):
                return
            boxes = live["to_boxes"](det)
            views = []
            current = self.session.current().T_lidar_cam()
            for cam in p["camera_names"]:
                image, info = live["images"].get(cam), live["K"].get(cam)
                if image is None or info is None or cam not in current:
                    continue
                if abs(header_to_us(image.header) - stamp) > 1e6 * float(p["max_camera_lidar_delay"]):
                    continue
                rgb = live["to_rgb"](image)
                K = live["to_K"](info).K
                views.append(CameraView(cam, (rgb.shape[1], rgb.shape[0]), K, np.linalg.inv(current[cam]), rgb))
            if not views:
                return
            frame = live["boxes"].frame(points[:, :3], boxes.boxes[:, :7], boxes.labels, [], stamp)
            from bevfusion_ros.calibration.semantics import CameraSemantics
            frame.cameras = {v.name: CameraSemantics(v.name, live["segmenter"](v), v.intrinsic) for v in views}
        except Exception as err:  # noqa: BLE001 - bad input must not kill the node; reported once per sweep
            self.get_logger().warning(f"frame not collected: {err}", throttle_duration_sec=10.0)
            return
        live["last"] = now
        self.session.add_frame(frame)

    # ------------------------------------------------------------------ running

    def _maybe_start(self) -> None:
        if self._started_once or not self.session.ready:
            return
        self._started_once = True
        self._start_timer.cancel()
        self.run_calibration()

    def _on_trigger(self, request, response):
        try:
            outcome = self.run_calibration()
        except Exception as err:  # noqa: BLE001 - a failed run must answer the caller, not hang it
            self.get_logger().error(f"SemAlign failed: {type(err).__name__}: {err}")
            response.success, response.message = False, f"calibration failed: {type(err).__name__}: {err}"
            return response
        response.success = outcome.applied
        response.message = outcome.reason
        return response

    def run_calibration(self) -> SessionOutcome:
        self.get_logger().info(f"SemAlign: calibrating from {self.session.frame_count} frame(s)")
        outcome = self.session.run()
        with self._lock:
            self.last_outcome = outcome
            self.runs += 1
        line = (f"SemAlign {'applied' if outcome.applied else 'not applied'}: {outcome.reason} "
                f"(loss {outcome.loss:.4f}, prior {outcome.prior_loss:.4f}, confidence {outcome.confidence:.2f}, "
                f"{outcome.duration:.1f} s)")
        if outcome.applied:
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)
        self._publish(outcome)
        return outcome

    # ------------------------------------------------------------------ outputs

    def _transforms(self, outcome: SessionOutcome, with_lidar: bool) -> list:
        base = self.params["base_frame"]
        T_base_lidar = outcome.T_base_lidar if outcome.T_base_lidar is not None else np.eye(4)
        stamp = self.get_clock().now().to_msg()
        items = [(self.lidar_frame, T_base_lidar)] if with_lidar else []
        items += [(cam, T_base_lidar @ T) for cam, T in sorted(outcome.T_lidar_cam.items())]
        out = []
        for child, T in items:
            msg = TransformStamped()
            msg.header = Header(stamp=stamp, frame_id=base)
            msg.child_frame_id = child
            msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in T[:3, 3])
            x, y, z, w = geo.quat_wxyz_to_xyzw(geo.matrix_to_quat_wxyz(T[:3, :3]))
            msg.transform.rotation.x, msg.transform.rotation.y = float(x), float(y)
            msg.transform.rotation.z, msg.transform.rotation.w = float(z), float(w)
            out.append(msg)
        return out

    def _publish(self, outcome: SessionOutcome) -> None:
        if TFMessage is not None and outcome.T_lidar_cam:
            self.result_pub.publish(TFMessage(transforms=self._transforms(outcome, with_lidar=False)))
            if outcome.applied:
                self.tf_static_pub.publish(TFMessage(transforms=self._transforms(outcome, with_lidar=True)))
        level = DiagnosticStatus.OK if outcome.applied else DiagnosticStatus.WARN
        values = {"applied": outcome.applied, "cameras_updated": ",".join(outcome.accepted_cameras),
                  "loss": f"{outcome.loss:.6f}", "prior_loss": f"{outcome.prior_loss:.6f}",
                  "confidence": f"{outcome.confidence:.3f}", "duration_s": f"{outcome.duration:.2f}",
                  "frames": self.session.frame_count, "runs": self.runs, "calibration_file": str(self.calib_path)}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: SemAlign calibration",
                                  message=outcome.reason[:500], hardware_id="bevfusion_ros",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


def main(args: list[str] | None = None) -> int:
    return run_node(CalibrationNode, "calibration_node", 3, args)


if __name__ == "__main__":
    sys.exit(main())
