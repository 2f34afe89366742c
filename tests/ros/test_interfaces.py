"""The project's interface packages are built into the environment, round-trip through rclpy, and the compat
copies of standard packages are wire-compatible with the real ones (same RIHS01 type hashes)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.ros.helpers import publish_until_received

# RIHS01 hashes of the real packages, computed independently of this repository:
# tf2_msgs/TFMessage from rosbags' ROS 2 Kilted store (checked below as well), vision_msgs 4.x
# Detection3DArray as published for the real ros-perception/vision_msgs package.
REAL_DETECTION3DARRAY_HASH = "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018"


def _installed_hash(type_name: str) -> str:
    """Hash rosidl generated for the installed type (share/<pkg>/msg/<Type>.json)."""
    package, _, name = type_name.split("/")
    module = __import__(f"{package}.msg", fromlist=[name])
    for prefix in [Path(sys.prefix), *Path(module.__file__).parents]:
        candidate = prefix / "share" / package / "msg" / f"{name}.json"
        if candidate.is_file():
            return json.loads(candidate.read_text())["type_hashes"][0]["hash_string"]
    pytest.skip(f"no type description json found for {type_name}")


def test_detected_objects_round_trip_through_rclpy(node):
    from bevfusion_msgs.msg import DetectedObject3D, DetectedObjects3D

    msg = DetectedObjects3D()
    msg.header.frame_id = "LIDAR_TOP"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1532402927, 647951000
    obj = DetectedObject3D(label="pedestrian", label_id=8, score=0.75, attribute="pedestrian.moving")
    obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = 10.0, -2.5, 0.8
    obj.pose.orientation.z, obj.pose.orientation.w = 0.5, 0.8660254
    obj.size.x, obj.size.y, obj.size.z = 0.7, 0.6, 1.7
    obj.velocity.x, obj.velocity.y = 1.25, -0.5
    msg.objects = [obj, DetectedObject3D(label="car", label_id=0, score=0.5)]
    got = publish_until_received(node, msg, DetectedObjects3D)
    assert got == msg
    assert got.objects[0].attribute == "pedestrian.moving" and got.objects[0].size.z == pytest.approx(1.7)


def test_tf_message_round_trips_through_rclpy(node):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    stamped = TransformStamped(child_frame_id="base_link")
    stamped.header.frame_id = "map"
    stamped.transform.translation.x = 411.3
    stamped.transform.rotation.w = 1.0
    msg = TFMessage(transforms=[stamped])
    assert publish_until_received(node, msg, TFMessage) == msg


def test_detection3d_array_round_trips_through_rclpy(node):
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = "car"
    hypothesis.hypothesis.score = 0.9
    hypothesis.pose.pose.position.x = 5.0
    detection = Detection3D(results=[hypothesis], id="17")
    detection.header.frame_id = "LIDAR_TOP"
    detection.bbox.center.position.x = 5.0
    detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = 4.5, 1.9, 1.6
    msg = Detection3DArray(detections=[detection])
    msg.header.frame_id = "LIDAR_TOP"
    assert publish_until_received(node, msg, Detection3DArray) == msg


def test_compat_tf_message_hash_equals_the_real_tf2_msgs():
    from rosbags.typesys import Stores, get_typestore

    real = get_typestore(Stores.ROS2_KILTED).hash_rihs01("tf2_msgs/msg/TFMessage")
    assert _installed_hash("tf2_msgs/msg/TFMessage") == real


def test_compat_vision_msgs_hashes_equal_the_real_vision_msgs():
    from bevfusion_ros.ros.types import typestore

    store = typestore()
    assert store.hash_rihs01("vision_msgs/msg/Detection3DArray") == REAL_DETECTION3DARRAY_HASH
    for name in ("ObjectHypothesis", "ObjectHypothesisWithPose", "BoundingBox3D", "Detection3D",
                 "Detection3DArray"):
        type_name = f"vision_msgs/msg/{name}"
        assert _installed_hash(type_name) == store.hash_rihs01(type_name), type_name


def test_bevfusion_msgs_hash_matches_rosbags_registration():
    from bevfusion_ros.ros.types import typestore

    for name in ("DetectedObject3D", "DetectedObjects3D"):
        type_name = f"bevfusion_msgs/msg/{name}"
        assert _installed_hash(type_name) == typestore().hash_rihs01(type_name)


def test_rosbags_cdr_of_project_types_is_read_by_rclpy():
    """A message serialized by rosbags (bag writer side) deserializes in rclpy (player side)."""
    from rclpy.serialization import deserialize_message

    from bevfusion_msgs.msg import DetectedObjects3D
    from bevfusion_ros.ros.types import typestore

    store = typestore()
    Obj = store.types["bevfusion_msgs/msg/DetectedObject3D"]
    Objs = store.types["bevfusion_msgs/msg/DetectedObjects3D"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Pose = store.types["geometry_msgs/msg/Pose"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quaternion = store.types["geometry_msgs/msg/Quaternion"]
    Vector3 = store.types["geometry_msgs/msg/Vector3"]
    obj = Obj(label="bus", label_id=3, score=0.25, pose=Pose(position=Point(x=1.0, y=2.0, z=3.0),
              orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)), size=Vector3(x=11.0, y=2.9, z=3.5),
              velocity=Vector3(x=4.0, y=0.0, z=0.0), attribute="vehicle.moving")
    raw = store.serialize_cdr(Objs(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="LIDAR_TOP"),
                                   objects=[obj]), "bevfusion_msgs/msg/DetectedObjects3D")
    got = deserialize_message(bytes(raw), DetectedObjects3D)
    assert got.header.stamp.nanosec == 7 and got.objects[0].label == "bus"
    assert got.objects[0].size.x == pytest.approx(11.0) and got.objects[0].attribute == "vehicle.moving"
