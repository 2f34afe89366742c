"""perception_node through real rclpy: outputs on the right topics with the LiDAR stamp and frame, and every
kind of bad input counted, logged once, and followed by a normally processed frame. The node never dies."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bevfusion_msgs.msg", reason="interfaces not built (make setup)")
pytest.importorskip("tf2_msgs.msg", reason="interfaces not built (make setup)")

from bevfusion_ros.classes import CAMERA_NAMES  # noqa: E402
from bevfusion_ros.perception.diagnostics import OK, WARN  # noqa: E402
from bevfusion_ros.ros.pointcloud import array_to_pointcloud2  # noqa: E402
from bevfusion_ros.ros.time import header_to_us  # noqa: E402
from tests.perception.node_harness import HEIGHT, WIDTH, NodeGraph, cloud  # noqa: E402

ALL_BUT_LAST = CAMERA_NAMES[:-1]     # CAM_BACK_RIGHT gets no camera_info until its test


@pytest.fixture(scope="module")
def graph():
    g = NodeGraph()
    g.publish_camera_info(ALL_BUT_LAST)
    yield g
    g.close()


class Clock:
    """Strictly increasing LiDAR stamps at 20 Hz across the module's tests."""
    stamp = 1_600_000_000_000_000

    @classmethod
    def next(cls):
        cls.stamp += 50_000
        return cls.stamp


def assert_processed_normally(graph, **kwargs):
    stamp = Clock.next()
    status = graph.send_frame(stamp, **kwargs)
    assert status["status"] == "processed", status
    return stamp, status


def test_a_good_frame_yields_detections_markers_and_maps_with_the_lidar_stamp_and_frame(graph):
    stamp, status = assert_processed_normally(graph)
    graph.wait_for(lambda: any(header_to_us(m.header) == stamp for m in graph.received["/perception/detections"]),
                   "detections")
    for topic in ("/perception/detections", "/perception/detections_vision", "/perception/map/drivable_area"):
        graph.wait_for(lambda t=topic: any(header_to_us(m.header) == stamp for m in graph.received[t]), topic)
        msg = next(m for m in graph.received[topic] if header_to_us(m.header) == stamp)
        assert msg.header.frame_id == "LIDAR_TOP", topic
    objects = next(m for m in graph.received["/perception/detections"] if header_to_us(m.header) == stamp)
    assert objects.objects[0].label == "car"
    graph.wait_for(lambda: graph.received["/perception/markers"], "markers")
    assert status["masked"] == ["CAM_BACK_RIGHT"] and status["latency_ms"]["end_to_end"] > 0
    frame = graph.pipeline.frames[-1]
    assert frame.stamp_us == stamp and frame.points.shape[1] == 5
    assert not frame.cameras[0].masked and frame.cameras[0].image.shape == (HEIGHT, WIDTH, 3)


def test_detections_are_published_once_whether_or_not_the_pipeline_hands_them_over_early(graph):
    # the model hands the detections over before the map is done (PerceptionPipeline, ModelProcess); a
    # pipeline that only returns its result still gets them published, once
    for early in (True, False):
        graph.pipeline.early_detections = early
        try:
            stamp, status = assert_processed_normally(graph)
            graph.wait_for(lambda: any(header_to_us(m.header) == stamp
                                       for m in graph.received["/perception/map/drivable_area"]), "map")
            graph.wait_for(lambda: any(header_to_us(m.header) == stamp
                                       for m in graph.received["/perception/detections"]), "detections")
            assert sum(header_to_us(m.header) == stamp for m in graph.received["/perception/detections"]) == 1
            latency = status["latency_ms"]
            assert 0 < latency["model"] <= latency["end_to_end"]
        finally:
            graph.pipeline.early_detections = True


def test_multi_sweep_frames_carry_the_previous_sweep_with_its_dt(graph):
    assert_processed_normally(graph)
    stamp, _ = assert_processed_normally(graph)
    frame = graph.pipeline.frames[-1]
    assert frame.stamp_us == stamp
    np.testing.assert_allclose(np.unique(frame.points[:, 4]), [0.0, 0.05], atol=1e-6)


def test_missing_camera_info_masks_that_camera_until_it_arrives(graph):
    stamp, status = assert_processed_normally(graph)
    assert "CAM_BACK_RIGHT" in status["masked"]
    assert graph.counter("camera_masked:CAM_BACK_RIGHT:no_camera_info") >= 1
    graph.publish_camera_info(CAMERA_NAMES[-1:])
    _, status = assert_processed_normally(graph)
    assert status["masked"] == []


def test_empty_cloud_is_rejected_counted_and_logged_once(graph):
    logged = []
    check = graph.node.log_limiter.check
    graph.node.log_limiter.check = lambda key, now=None: logged.append(key) or check(key, now)
    try:
        for _ in range(3):
            empty = array_to_pointcloud2({n: np.zeros(0, np.float32) for n in ("x", "y", "z", "intensity")},
                                         "LIDAR_TOP", 0)
            status = graph.send_frame(Clock.next(), cameras=(), cloud_msg=empty)
            assert status == {**status, "status": "rejected", "reason": "empty_cloud"}
    finally:
        graph.node.log_limiter.check = check
    assert graph.counter("empty_cloud") >= 3
    assert logged.count("empty_cloud") == 3          # asked each time ...
    assert_processed_normally(graph)


def test_empty_cloud_logs_are_rate_limited(graph):
    before = graph.node.log_limiter._suppressed.get("empty_cloud", 0)
    empty = array_to_pointcloud2({n: np.zeros(0, np.float32) for n in ("x", "y", "z", "intensity")}, "LIDAR_TOP", 0)
    graph.send_frame(Clock.next(), cameras=(), cloud_msg=empty)
    assert graph.node.log_limiter._suppressed.get("empty_cloud", 0) == before + 1   # ... but not logged again


def test_nan_and_inf_points_are_dropped_and_counted(graph):
    pts, _ = cloud(n=500)
    pts[:100, 0] = np.nan
    pts[100:150, 2] = np.inf
    stamp = Clock.next()
    msg = array_to_pointcloud2({n: pts[:, i] for i, n in enumerate(("x", "y", "z", "intensity"))}, "LIDAR_TOP", stamp)
    before = graph.counter("nonfinite_points")
    status = graph.send_frame(stamp, cloud_msg=msg)
    assert status["status"] == "processed"
    frame = graph.pipeline.frames[-1]
    assert np.isfinite(frame.points).all() and (frame.points[:, 4] == 0).sum() == 350
    assert graph.counter("nonfinite_points") == before + 1


def test_all_nan_cloud_is_rejected(graph):
    pts = np.full((50, 4), np.nan, np.float32)
    msg = array_to_pointcloud2({n: pts[:, i] for i, n in enumerate(("x", "y", "z", "intensity"))}, "LIDAR_TOP", 0)
    assert graph.send_frame(Clock.next(), cameras=(), cloud_msg=msg)["reason"] == "empty_cloud"
    assert_processed_normally(graph)


def test_cloud_without_z_is_rejected_and_extra_fields_are_ignored(graph):
    pts, _ = cloud(n=100)
    no_z = array_to_pointcloud2({"x": pts[:, 0], "y": pts[:, 1], "intensity": pts[:, 3]}, "LIDAR_TOP", 0)
    assert graph.send_frame(Clock.next(), cameras=(), cloud_msg=no_z)["reason"] == "bad_cloud"
    extra = array_to_pointcloud2({"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "foo": pts[:, 3].astype(np.float64),
                                  "ring": np.arange(100, dtype=np.uint16)}, "LIDAR_TOP", 0)
    status = graph.send_frame(Clock.next(), cloud_msg=extra)
    assert status["status"] == "processed"
    assert (graph.pipeline.frames[-1].points[:100, 3] == 0).all()     # no intensity field -> 0


def test_truncated_cloud_is_rejected(graph):
    _, msg = cloud(n=100)
    msg.data = bytes(msg.data)[:-7]
    before = graph.counter("bad_cloud")
    assert graph.send_frame(Clock.next(), cameras=(), cloud_msg=msg)["reason"] == "bad_cloud"
    assert graph.counter("bad_cloud") == before + 1
    assert_processed_normally(graph)


def test_corrupt_jpeg_masks_the_camera_and_the_next_good_image_is_used(graph):
    stamp = Clock.next()
    graph.publish_images(stamp, CAMERA_NAMES[:1], raw_override=b"\xff\xd8\xff\xe0 not really a jpeg")
    status = graph.send_frame(stamp, cameras=CAMERA_NAMES[1:])
    assert status["status"] == "processed" and status["masked"] == ["CAM_FRONT"]
    assert graph.counter("camera_masked:CAM_FRONT:decode_error") >= 1
    _, status = assert_processed_normally(graph)
    assert status["masked"] == []


def test_image_of_the_wrong_size_masks_the_camera(graph):
    stamp = Clock.next()
    graph.publish_images(stamp, CAMERA_NAMES[:1], image=np.zeros((HEIGHT * 2, WIDTH * 2, 3), np.uint8))
    status = graph.send_frame(stamp, cameras=CAMERA_NAMES[1:])
    assert status["masked"] == ["CAM_FRONT"]
    assert graph.counter("camera_masked:CAM_FRONT:image_size_mismatch") >= 1
    _, status = assert_processed_normally(graph)
    assert status["masked"] == []


def test_cloud_in_an_unknown_frame_is_dropped_with_the_reason(graph):
    _, msg = cloud(frame_id="velodyne")
    status = graph.send_frame(Clock.next(), cloud_msg=msg)
    assert status["status"] == "dropped" and status["reason"] == "unknown_frame"
    assert_processed_normally(graph)


def test_duplicate_stamps_are_rejected_and_backwards_stamps_restart_accumulation(graph):
    stamp, _ = assert_processed_normally(graph)
    _, msg = cloud(stamp_us=stamp)
    graph.pub_lidar.publish(msg)
    graph.wait_for(lambda: sum(s["stamp_us"] == stamp for s in graph.statuses()) == 2, "duplicate status")
    assert graph.statuses()[-1] == {"stamp_us": stamp, "status": "rejected", "reason": "duplicate_stamp"}
    back = stamp - 10_000_000
    status = graph.send_frame(back)
    assert status["status"] == "processed" and "stamp_backwards" in status["notes"]
    assert (graph.pipeline.frames[-1].points[:, 4] == 0).all()       # no older sweeps carried over
    Clock.stamp = max(Clock.stamp, stamp)
    assert_processed_normally(graph)


def test_huge_cloud_is_decimated_counted_and_processed(graph):
    _, msg = cloud(n=1_000_000)
    before = graph.counter("oversized_cloud")
    status = graph.send_frame(Clock.next(), cloud_msg=msg)
    assert status["status"] == "processed"
    assert (graph.pipeline.frames[-1].points[:, 4] == 0).sum() <= graph.node.params["max_points"]
    assert graph.counter("oversized_cloud") == before + 1
    assert_processed_normally(graph)


def test_model_failure_drops_that_frame_only(graph):
    stamp = Clock.next()
    graph.pipeline.fail_stamps.add(stamp)
    status = graph.send_frame(stamp)
    assert status["status"] == "dropped" and status["reason"] == "model_error"
    assert_processed_normally(graph)


def test_a_stopped_camera_keeps_lidar_outputs_flowing_and_diagnostics_warn(graph):
    import time
    live = CAMERA_NAMES[:-1]
    for _ in range(15):                        # 0.75 s of frames without CAM_BACK_RIGHT
        stamp, status = assert_processed_normally(graph, cameras=live)
        time.sleep(0.05)
    assert status["masked"] == ["CAM_BACK_RIGHT"]
    assert graph.counter("camera_masked:CAM_BACK_RIGHT:no_recent_image") >= 1
    n = len(graph.received["/diagnostics"])
    graph.wait_for(lambda: len(graph.received["/diagnostics"]) > n, "diagnostics")
    inputs = next(s for s in graph.received["/diagnostics"][-1].status if s.name.endswith("inputs"))
    assert inputs.level == bytes([WARN]) and "CAM_BACK_RIGHT" in inputs.message


def test_overload_drops_the_oldest_frame_and_reports_it(graph):
    graph.pipeline.delay_s = 0.3
    try:
        stamps = [Clock.next() for _ in range(4)]
        for stamp in stamps:
            graph.publish_pose(stamp)
            _, msg = cloud(stamp_us=stamp)
            graph.pub_lidar.publish(msg)
        results = [graph.status_of(s) for s in stamps]
    finally:
        graph.pipeline.delay_s = 0.0
    assert results[0]["status"] == "processed" and results[-1]["status"] == "processed"
    dropped = [r for r in results if r["status"] == "dropped"]
    assert dropped and all(r["reason"] == "queue_overflow" for r in dropped)
    assert graph.node.diag.snapshot()["counters"]["dropped:queue_overflow"] >= len(dropped)


def test_diagnostics_report_latency_backend_and_counts(graph):
    n = len(graph.received["/diagnostics"])
    graph.wait_for(lambda: len(graph.received["/diagnostics"]) > n, "diagnostics")
    status = {s.name: s for s in graph.received["/diagnostics"][-1].status}
    pipeline = {kv.key: kv.value for kv in status["perception: pipeline"].values}
    assert pipeline["backend"] == "torch" and float(pipeline["latency_end_to_end_p50_ms"]) > 0
    assert int(pipeline["frames_processed"]) > 10 and pipeline["calibration"] == "tf"
    errors = {kv.key: kv.value for kv in status["perception: input errors"].values}
    assert int(errors["empty_cloud"]) >= 3 and int(errors["bad_cloud"]) >= 2
    assert status["perception: pipeline"].level == bytes([OK])


def test_set_active_false_stops_processing_and_true_resumes_it(graph):
    from std_srvs.srv import SetBool
    import time
    client = graph.io.create_client(SetBool, f"{graph.prefix}/perception/set_active")
    assert client.wait_for_service(5.0)
    future = client.call_async(SetBool.Request(data=False))
    graph.wait_for(lambda: future.done(), "set_active false")
    stamp = Clock.next()
    graph.publish_pose(stamp)
    graph.pub_lidar.publish(cloud(stamp_us=stamp)[1])
    time.sleep(0.3)
    assert not any(s["stamp_us"] == stamp for s in graph.statuses())
    future = client.call_async(SetBool.Request(data=True))
    graph.wait_for(lambda: future.done(), "set_active true")
    assert_processed_normally(graph)


def test_a_new_calibration_file_is_picked_up_live_and_the_plan_rebuilt_once(tmp_path):
    import os
    import time

    from tests.perception.node_harness import T_BASE_CAM

    moved = T_BASE_CAM.copy()
    moved[1, 3] += 0.3

    def write(T):
        text = "base_frame: base_link\nsensors:\n" + "".join(
            f"  {name}: {{T_base_sensor: {T.tolist()}}}\n" for name in CAMERA_NAMES)
        path = tmp_path / "rig.yaml"
        path.write_text(text)
        os.utime(path, (time.time() + 1, time.time() + 1))   # a new mtime even within one second
        return path

    path = write(T_BASE_CAM)
    g = NodeGraph(calibration_file=str(path))
    try:
        g.publish_camera_info()
        stamp = 1_700_000_000_000_000
        for _ in range(3):
            stamp += 50_000
            assert g.send_frame(stamp)["status"] == "processed"
        assert g.pipeline.plan_rebuilds - 1 == 1          # warm-up frame, then the calibration: once
        first = g.pipeline.frames[-1].cameras[0].T_lidar_cam.copy()
        write(moved)
        g.wait_for(lambda: g.node.diag.snapshot()["info"]["calibration"] == str(path)
                   and g.node.assembler._calibration["CAM_FRONT"][1, 3] == moved[1, 3], "calibration reload")
        for _ in range(3):
            stamp += 50_000
            assert g.send_frame(stamp)["status"] == "processed"
        after = g.pipeline.frames[-1].cameras[0].T_lidar_cam
        assert not np.allclose(first, after)
        assert g.pipeline.plan_rebuilds - 1 == 2          # rebuilt once for the new calibration, not per frame
    finally:
        g.close()


def test_a_republished_tf_static_changes_the_extrinsics(graph):
    from tf2_msgs.msg import TFMessage

    from tests.perception.node_harness import T_BASE_CAM, T_BASE_LIDAR, transform_stamped

    stamp, _ = assert_processed_normally(graph)
    before = graph.pipeline.frames[-1].cameras[0].T_lidar_cam.copy()
    moved = T_BASE_CAM.copy()
    moved[2, 3] += 0.2
    graph.pub_tf_static.publish(TFMessage(transforms=[transform_stamped("base_link", "LIDAR_TOP", 0, T_BASE_LIDAR)]
                                          + [transform_stamped("base_link", c, 0, moved) for c in CAMERA_NAMES]))
    graph.wait_for(lambda: abs(graph.node.tf.lookup("base_link", "CAM_FRONT", None)[2, 3] - moved[2, 3]) < 1e-9,
                   "new tf_static")
    assert_processed_normally(graph)
    after = graph.pipeline.frames[-1].cameras[0].T_lidar_cam
    assert abs((after - before)[:3, 3]).max() == pytest.approx(0.2, abs=1e-6)


def test_raw_images_by_parameter():
    from sensor_msgs.msg import Image

    from bevfusion_ros.ros.image import rgb_to_image
    from bevfusion_ros.ros.qos import PLAYER_QOS

    g = NodeGraph(compressed_images=False)
    try:
        g.publish_camera_info()
        raw = {c: g.io.create_publisher(Image, f"{g.prefix}/{c}/image_rect", PLAYER_QOS) for c in CAMERA_NAMES}
        stamp = 1_800_000_000_000_000
        g.publish_pose(stamp)
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[:, :, 0] = 200
        for c in CAMERA_NAMES:
            raw[c].publish(rgb_to_image(image, c, stamp, encoding="bgr8"))
        g.wait_for(lambda: all(g.node.assembler.latest_image_stamp(c) == stamp for c in CAMERA_NAMES), "raw images")
        status = g.send_frame(stamp, cameras=(), pose=False)
        assert status["status"] == "processed" and status["masked"] == []
        assert g.pipeline.frames[-1].cameras[0].image[0, 0, 0] == 200      # RGB order restored from bgr8
    finally:
        g.close()


def test_the_node_shortens_the_gil_switch_interval_so_the_model_thread_is_not_starved(graph):
    import sys

    assert sys.getswitchinterval() == pytest.approx(graph.node.params["gil_switch_interval"])
    assert graph.node.params["gil_switch_interval"] < 0.005    # Python's default, which starved the model


def test_ego_poses_are_heard_best_effort_on_a_listener_node_of_their_own(graph):
    # a reliable reader holds every later pose back behind one lost sample until the writer's heartbeat
    # repairs it (poses then arrive in 1 s bursts); best effort loses one pose and interpolates across it
    from rclpy.qos import ReliabilityPolicy

    listener = graph.node.tf_listener.node
    infos = [i for i in listener.get_subscriptions_info_by_topic(f"{graph.prefix}/tf")
             if i.node_name == listener.get_name()]
    assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.BEST_EFFORT]
    static = [i for i in listener.get_subscriptions_info_by_topic(f"{graph.prefix}/tf_static")
              if i.node_name == listener.get_name()]
    assert [i.qos_profile.reliability for i in static] == [ReliabilityPolicy.RELIABLE]


def _published_drivable_area(graph, stamp):
    topic = "/perception/map/drivable_area"
    graph.wait_for(lambda: any(header_to_us(m.header) == stamp for m in graph.received[topic]), topic)
    grid = next(m for m in graph.received[topic] if header_to_us(m.header) == stamp)
    return np.asarray(grid.data, np.int8).reshape(grid.info.height, grid.info.width)


def test_the_published_map_is_fused_over_frames_along_the_ego_pose(graph):
    """The map head says 0.9 for a cell, then 0.1 one sweep later: the node publishes the decaying average
    of the two (model YAML map.temporal_fusion), not the last frame alone; with map_fusion false it would
    publish 10."""
    first, second = Clock.next(), Clock.next()
    graph.pipeline.map_value.update({first: 0.9, second: 0.1})
    assert graph.send_frame(first)["status"] == "processed"
    assert graph.send_frame(second)["status"] == "processed"
    interior = _published_drivable_area(graph, second)[2:6, 2:6]       # cells both frames covered
    assert 30 <= interior.min() and interior.max() <= 70, interior
    assert "map_fusion_resets" in graph.node.diag.snapshot()["info"]


def test_map_fusion_off_publishes_each_frame_as_it_is():
    from tests.perception.node_harness import NodeGraph as Graph

    g = Graph(map_fusion=False)
    try:
        g.publish_camera_info(CAMERA_NAMES)
        first, second = Clock.next(), Clock.next()
        g.pipeline.map_value.update({first: 0.9, second: 0.1})
        assert g.send_frame(first)["status"] == "processed"
        assert g.send_frame(second)["status"] == "processed"
        assert (_published_drivable_area(g, second) == 10).all()
    finally:
        g.close()


def test_a_rate_limit_processes_every_nth_sweep_on_arrival_and_still_accumulates_the_others():
    g = NodeGraph(max_rate=10)          # an integer for a float parameter, as a user would type it
    try:
        g.publish_camera_info()
        stamps = [1_900_000_000_000_000 + i * 50_000 for i in range(5)]
        results = [g.send_frame(s) for s in stamps]
        assert [r["status"] for r in results] == ["processed", "dropped", "processed", "dropped", "processed"]
        assert {r.get("reason") for r in results if r["status"] == "dropped"} == {"rate_limit"}
        assert g.counter("dropped:rate_limit") == 2
        # the skipped sweep is still the processed one's earlier sweep (sweeps: 2)
        np.testing.assert_allclose(np.unique(g.pipeline.frames[-1].points[:, 4]), [0.0, 0.05], atol=1e-6)
    finally:
        g.close()


def test_a_non_numeric_float_parameter_is_a_clear_start_up_error():
    from bevfusion_ros.errors import UserError
    with pytest.raises(UserError, match="max_rate must be a number"):
        NodeGraph(max_rate="fast")
