"""A real rclpy graph around one PerceptionNode: publishers for every input, recorders for every output.

The model is a stub (records the Frames it gets, returns one box and a map): these tests pin down the
node's wiring and its behaviour on bad input, fast. The real model runs in tests/integration.
"""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import CAMERA_NAMES, MAP_CLASSES
from bevfusion_ros.frame import BEVMap, Detections, PerceptionResult
from bevfusion_ros.ros.camera_info import make_camera_info
from bevfusion_ros.ros.image import rgb_to_compressed_image
from bevfusion_ros.ros.pointcloud import xyzi_to_pointcloud2
from bevfusion_ros.ros.qos import PLAYER_QOS, TF_STATIC_PUBLISHER_QOS
from bevfusion_ros.ros.time import make_header

WIDTH, HEIGHT = 64, 36
K = np.array([[50.0, 0, 32], [0, 50.0, 18], [0, 0, 1]])
T_BASE_LIDAR = geo.make_transform(geo.yaw_to_quat_wxyz(np.pi / 2), [0.94, 0.0, 1.84])
T_BASE_CAM = geo.make_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), [1.7, 0.0, 1.5])


class StubPipeline:
    def __init__(self):
        self.frames = []
        self.fail_stamps: set[int] = set()
        self.delay_s = 0.0
        self.plan_rebuilds = 0
        self.map_value: dict[int, float] = {}     # stamp -> drivable_area probability (default 0.5)
        self.early_detections = True              # hand the detections over before returning the result

    def infer(self, frame, on_detections=None, cameras=None):
        if cameras is not None:       # the node hands the cameras over late, as PerceptionPipeline takes them
            frame.cameras = cameras()
        key = tuple(np.round(np.concatenate([c.T_lidar_cam.ravel(), c.intrinsic.ravel()]), 9).tobytes()
                    for c in frame.cameras)
        if key != getattr(self, "_plan_key", None):     # what PerceptionPipeline does with its bev_pool plan
            self._plan_key = key
            self.plan_rebuilds += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if frame.stamp_us in self.fail_stamps:
            raise RuntimeError("stub model failure")
        self.frames.append(frame)
        det = Detections(boxes=np.array([[10.0, 1.0, 0.0, 4.0, 2.0, 1.5, 0.3, 2.0, 0.0]]),
                         scores=np.array([0.8], np.float32), labels=np.array([0]), attributes=np.array([-1]))
        if on_detections is not None and self.early_detections:   # as PerceptionPipeline does
            on_detections(det)
        probs = np.zeros((len(MAP_CLASSES), 8, 8), np.float32)
        probs[0] = self.map_value.get(frame.stamp_us, 0.5)
        return PerceptionResult(det, BEVMap(probs, 1.0, -4.0, -4.0), {"total": 1.0})


def transform_stamped(parent, child, stamp_us, T):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped(header=make_header(stamp_us, parent), child_frame_id=child)
    t = msg.transform.translation
    t.x, t.y, t.z = (float(v) for v in T[:3, 3])
    w, x, y, z = geo.matrix_to_quat_wxyz(T[:3, :3])
    r = msg.transform.rotation
    r.w, r.x, r.y, r.z = float(w), float(x), float(y), float(z)
    return msg


def cloud(n=2000, seed=0, stamp_us=0, frame_id="LIDAR_TOP"):
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform(-30, 30, (n, 3)), rng.uniform(0, 255, (n, 1))], 1).astype(np.float32)
    return pts, xyzi_to_pointcloud2(pts, frame_id, stamp_us)


class NodeGraph:
    """Starts the node under test plus an I/O node on one MultiThreadedExecutor in a background thread.

    Each graph lives under its own namespace (inputs remapped into it too), so two graphs alive at once in
    one test session never hear each other."""

    _count = 0

    def __init__(self, **params):
        from bevfusion_ros.nodes.perception import PerceptionNode
        from tf2_msgs.msg import TFMessage
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.pipeline = StubPipeline()
        overrides = {"checkpoint": "", "sweeps": 2, "diagnostics_period": 0.2, "stale_after": 0.6,
                     "image_decode_reduction": 1, **params}
        NodeGraph._count += 1
        self.prefix = f"/graph{NodeGraph._count}"
        inputs = ["/LIDAR_TOP", "/tf", "/tf_static", "/diagnostics"] + [
            f"/{c}/{suffix}" for c in CAMERA_NAMES for suffix in ("image_rect_compressed", "image_rect", "camera_info")]
        remaps = [arg for topic in inputs for arg in ("-r", f"{topic}:={self.prefix}{topic}")]
        self.node = PerceptionNode("perception", pipeline=self.pipeline, context=self.context,
                                   namespace=self.prefix, cli_args=["--ros-args", *remaps],
                                   parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.io = Node("test_io", context=self.context)
        pre = self.prefix
        self.pub_lidar = self.io.create_publisher(PointCloud2, f"{pre}/LIDAR_TOP", PLAYER_QOS)
        self.pub_images = {c: self.io.create_publisher(CompressedImage, f"{pre}/{c}/image_rect_compressed",
                                                       PLAYER_QOS) for c in CAMERA_NAMES}
        self.pub_info = {c: self.io.create_publisher(CameraInfo, f"{pre}/{c}/camera_info", PLAYER_QOS)
                         for c in CAMERA_NAMES}
        self.pub_tf = self.io.create_publisher(TFMessage, f"{pre}/tf", PLAYER_QOS)
        self.pub_tf_static = self.io.create_publisher(TFMessage, f"{pre}/tf_static", TF_STATIC_PUBLISHER_QOS)
        self.received = defaultdict(list)
        self.cond = threading.Condition()
        from bevfusion_msgs.msg import DetectedObjects3D
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from std_msgs.msg import String
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray
        for topic, msg_type in [("/perception/detections", DetectedObjects3D),
                                ("/perception/detections_vision", Detection3DArray),
                                ("/perception/markers", MarkerArray), ("/perception/frame_status", String),
                                ("/perception/map/drivable_area", OccupancyGrid), ("/diagnostics", DiagnosticArray)]:
            self.io.create_subscription(msg_type, f"{pre}{topic}", lambda m, t=topic: self._record(t, m), 200)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.pub_tf_static.publish(TFMessage(transforms=[transform_stamped("base_link", "LIDAR_TOP", 0, T_BASE_LIDAR)]
                                             + [transform_stamped("base_link", c, 0, T_BASE_CAM) for c in CAMERA_NAMES]))
        self.wait_for(lambda: self.node.tf.buffer.can_transform("base_link", "CAM_BACK_RIGHT"), "tf_static")

    def _record(self, topic, msg):
        with self.cond:
            self.received[topic].append(msg)
            self.cond.notify_all()

    def wait_for(self, predicate, what, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.cond.wait(min(remaining, 0.02))

    def statuses(self):
        with self.cond:
            return [json.loads(m.data) for m in self.received["/perception/frame_status"]]

    def status_of(self, stamp_us, timeout=10.0):
        found = []

        def check():
            found[:] = [s for s in self.statuses() if s["stamp_us"] == stamp_us]
            return bool(found)
        self.wait_for(check, f"frame_status of {stamp_us}", timeout)
        return found[-1]

    def publish_camera_info(self, cameras=CAMERA_NAMES, width=WIDTH, height=HEIGHT):
        for c in cameras:
            self.pub_info[c].publish(make_camera_info(K, width, height, c))
        self.wait_for(lambda: all(self.node.assembler.has_camera_info(c) for c in cameras), "camera_info")

    def publish_pose(self, stamp_us):
        from tf2_msgs.msg import TFMessage
        T = geo.make_transform(geo.yaw_to_quat_wxyz(0.1 * stamp_us * 1e-6), [5.0 * stamp_us * 1e-6, 0, 0])
        self.pub_tf.publish(TFMessage(transforms=[transform_stamped("map", "base_link", stamp_us, T)]))
        self.wait_for(lambda: self.node.tf.buffer.time_range("base_link") is not None
                      and self.node.tf.buffer.time_range("base_link")[1] >= stamp_us, f"/tf at {stamp_us}")

    def publish_images(self, stamp_us, cameras=CAMERA_NAMES, image=None, raw_override=None):
        for c in cameras:
            if raw_override is not None:
                msg = rgb_to_compressed_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), c, stamp_us)
                msg.data = raw_override
            else:
                msg = rgb_to_compressed_image(np.full((HEIGHT, WIDTH, 3), 100, np.uint8) if image is None else image,
                                              c, stamp_us)
            self.pub_images[c].publish(msg)
        self.wait_for(lambda: all(self.node.assembler.latest_image_stamp(c) == stamp_us for c in cameras),
                      f"images at {stamp_us}")

    def send_frame(self, stamp_us, cameras=CAMERA_NAMES, cloud_msg=None, pose=True, **image_kwargs):
        """Pose, images, then the LiDAR sweep; returns its frame_status."""
        if pose:
            self.publish_pose(stamp_us)
        if cameras:
            self.publish_images(stamp_us, cameras, **image_kwargs)
        if cloud_msg is None:
            _, cloud_msg = cloud(stamp_us=stamp_us, seed=stamp_us % 1000)
        cloud_msg.header = make_header(stamp_us, cloud_msg.header.frame_id or "LIDAR_TOP")
        self.pub_lidar.publish(cloud_msg)
        return self.status_of(stamp_us)

    def counter(self, key):
        return self.node.diag.snapshot()["counters"].get(key, 0)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(2.0)              # the spinning thread leaves before the nodes go
        self.node.destroy_node()
        self.io.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(2.0)
