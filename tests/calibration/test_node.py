"""calibration_node in a real rclpy graph: the Trigger service applies a better calibration (YAML rewritten
atomically with a backup, /tf_static and ~/result published) and refuses one that is not better."""
import threading
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (make setup)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from bevfusion_ros.calibration import calib_io, lie  # noqa: E402
from bevfusion_ros.ros.qos import CALIBRATION_QOS, TF_STATIC_LISTENER_QOS  # noqa: E402


def _call(node, client, timeout=120.0):
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), "service call timed out"
    return future.result()


def test_node_applies_a_better_calibration_and_refuses_a_worse_one(toy, tmp_path, perturb, fast_config):
    from bevfusion_ros.nodes.calibration import CalibrationNode

    frames, truth = toy
    camera = "CAM_FRONT"
    bumped = perturb(truth[camera], (3.0, -2.0, 2.0), (0.1, -0.1, 0.15))
    T_base_lidar = np.eye(4)
    T_base_lidar[:3, 3] = [0.9, 0.0, 1.8]
    path = tmp_path / "toy.yaml"
    calib_io.save_rig_calibration(path, {camera: lie.invert(bumped)}, T_base_lidar, rig="toy")
    original = path.read_text()
    config = tmp_path / "fast.yaml"
    cfg = fast_config().to_dict()
    cfg.pop("mode")
    config.write_text(yaml.safe_dump(cfg))

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    try:
        node = CalibrationNode(context=context, parameter_overrides=[
            Parameter("calibration_file", value=str(path)), Parameter("frames", value=2),
            Parameter("camera_names", value=[camera]), Parameter("min_improvement", value=0.02),
            Parameter("mode", value="per_camera"),
            Parameter("config_file", value=str(config)), Parameter("threads", value=1)])
        for frame in frames:
            node.session.add_frame(frame)
        client_node = rclpy.create_node("calibration_test_client", context=context)
        client = client_node.create_client(Trigger, "/calibration/calibrate")
        received = {"tf_static": [], "result": [], "diagnostics": []}
        client_node.create_subscription(tf2_msgs.TFMessage, "/tf_static", received["tf_static"].append,
                                        TF_STATIC_LISTENER_QOS)
        client_node.create_subscription(tf2_msgs.TFMessage, "/calibration/result", received["result"].append,
                                        CALIBRATION_QOS)
        client_node.create_subscription(DiagnosticArray, "/diagnostics", received["diagnostics"].append, 10)
        executor.add_node(node)
        executor.add_node(client_node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        # 1. the bumped calibration is replaced by a better one
        response = _call(client_node, client)
        assert response.success, response.message
        assert "applied" in response.message
        applied = calib_io.load_rig_calibration(path)[camera]
        before = lie.transform_error(bumped, truth[camera])                   # T_cam_lidar
        after = lie.transform_error(lie.invert(applied), truth[camera])      # the file holds T_lidar_cam
        assert after[0] < before[0] / 3, (before, after)
        assert (tmp_path / "toy.yaml.bak").read_text() == original
        deadline = time.monotonic() + 10.0
        while (not received["tf_static"] or not received["result"] or not received["diagnostics"]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        children = {t.child_frame_id: t for t in received["tf_static"][-1].transforms}
        assert set(children) == {"LIDAR_TOP", camera}
        sent = children[camera].transform.translation
        expected = (T_base_lidar @ applied)[:3, 3]
        assert np.allclose([sent.x, sent.y, sent.z], expected, atol=1e-9)
        assert received["result"][-1].transforms[0].child_frame_id == camera
        values = {kv.key: kv.value for kv in received["diagnostics"][-1].status[0].values}
        assert values["applied"] == "True" and float(values["loss"]) < float(values["prior_loss"])

        # 2. running again from the (now good) calibration finds nothing 2 % better: refused, file untouched
        applied_text = path.read_text()
        response = _call(client_node, client)
        assert not response.success
        assert "refused" in response.message and "no improvement" in response.message
        assert path.read_text() == applied_text
        values = {kv.key: kv.value for kv in received["diagnostics"][-1].status[0].values}
        assert values["applied"] == "False"

        # 3. a corrupt calibration file: refused with the reason, file left as it is
        path.write_text("rig: [unclosed")
        response = _call(client_node, client)
        assert not response.success and "not valid YAML" in response.message
        assert path.read_text() == "rig: [unclosed"
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)


def test_node_collects_live_frames_from_topics(tmp_path, nuscenes_sample):
    """LiDAR + detections + images + camera_info on their topics become a labeled frame (ONNX image labels,
    box/ground LiDAR labels) in the node's buffer."""
    import torch

    from bevfusion_ros.calibration.providers import load_sample_json
    from bevfusion_ros.frame import Detections
    from bevfusion_ros.nodes.calibration import CalibrationNode
    from bevfusion_ros.ros import outputs
    from bevfusion_ros.ros.camera_info import make_camera_info
    from bevfusion_ros.ros.image import rgb_to_compressed_image
    from bevfusion_ros.ros.pointcloud import xyzi_to_pointcloud2
    from bevfusion_ros.ros.time import make_header

    model = torch.nn.Conv2d(3, 11, 1)
    onnx_path = tmp_path / "seg.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 36, 64), str(onnx_path), input_names=["image"], dynamo=False)
    record = load_sample_json(nuscenes_sample, with_images=True)
    path = tmp_path / "rig.yaml"
    calib_io.save_rig_calibration(path, {"CAM_FRONT": lie.invert(record.views["CAM_FRONT"].T_cam_lidar)}, np.eye(4))

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    try:
        node = CalibrationNode(context=context, parameter_overrides=[
            Parameter("calibration_file", value=str(path)), Parameter("frames", value=1),
            Parameter("camera_names", value=["CAM_FRONT"]), Parameter("image_model", value=str(onnx_path)),
            Parameter("collect_period", value=0.0), Parameter("threads", value=1)])
        pub_node = rclpy.create_node("calibration_test_sensors", context=context)
        from bevfusion_msgs.msg import DetectedObjects3D
        from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

        from bevfusion_ros.ros.qos import OUTPUT_QOS, PLAYER_QOS
        pubs = {"lidar": pub_node.create_publisher(PointCloud2, "/LIDAR_TOP", PLAYER_QOS),
                "image": pub_node.create_publisher(CompressedImage, "/CAM_FRONT/image_rect_compressed", PLAYER_QOS),
                "info": pub_node.create_publisher(CameraInfo, "/CAM_FRONT/camera_info", PLAYER_QOS),
                "det": pub_node.create_publisher(DetectedObjects3D, "/perception/detections", OUTPUT_QOS)}
        executor.add_node(node)
        executor.add_node(pub_node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        stamp = record.stamp_us
        boxes = np.zeros((len(record.boxes), 9))
        boxes[:, :7] = record.boxes
        detections = Detections(boxes=boxes, scores=np.ones(len(boxes), np.float32),
                                labels=record.box_classes, attributes=np.full(len(boxes), -1))
        view = record.views["CAM_FRONT"]
        deadline = time.monotonic() + 30.0
        while node.session.frame_count == 0 and time.monotonic() < deadline:
            pubs["info"].publish(make_camera_info(view.intrinsic, 1600, 900, "CAM_FRONT", stamp))
            pubs["image"].publish(rgb_to_compressed_image(view.image, "CAM_FRONT", stamp))
            pubs["det"].publish(outputs.detected_objects_msg(detections, make_header(stamp, "LIDAR_TOP")))
            time.sleep(0.3)
            pubs["lidar"].publish(xyzi_to_pointcloud2(record.points[:, :4], "LIDAR_TOP", stamp))
            time.sleep(0.5)
        assert node.session.frame_count == 1
        frame = node.session._frames[-1]
        assert set(frame.cameras) == {"CAM_FRONT"} and frame.cameras["CAM_FRONT"].labels.shape == (900, 1600)
        assert (frame.point_labels == 10).sum() > 5000 and ((frame.point_labels >= 0) & (frame.point_labels < 10)).sum() > 500
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)
