"""PerceptionResult -> ROS messages: boxes keep their geometry and class, markers clear first, grids are
probability x 100 with x along columns, diagnostics carry levels."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import ATTRIBUTES, DETECTION_CLASSES, MAP_CLASSES
from bevfusion_ros.frame import BEVMap, Detections
from bevfusion_ros.perception.diagnostics import WARN, StatusEntry
from bevfusion_ros.ros import outputs
from bevfusion_ros.ros.time import header_to_us, make_header


def sample_detections() -> Detections:
    boxes = np.array([[10.0, -2.0, 0.5, 4.5, 1.9, 1.6, 0.7, 3.0, -1.0],
                      [-5.0, 8.0, 0.2, 0.6, 0.7, 1.8, -2.5, 0.0, 0.0]])
    return Detections(boxes=boxes, scores=np.array([0.9, 0.3], np.float32), labels=np.array([0, 5]),
                      attributes=np.array([ATTRIBUTES.index("vehicle.moving"), -1]))


def test_detected_objects_round_trip_every_field_nds_needs():
    pytest.importorskip("bevfusion_msgs.msg")
    header = make_header(1_532_402_927_647_951, "LIDAR_TOP")
    msg = outputs.detected_objects_msg(sample_detections(), header)
    assert header_to_us(msg.header) == 1_532_402_927_647_951 and msg.header.frame_id == "LIDAR_TOP"
    car = msg.objects[0]
    assert car.label == "car" and car.label_id == 0 and car.attribute == "vehicle.moving"
    assert (car.size.x, car.size.y, car.size.z) == pytest.approx((4.5, 1.9, 1.6))
    assert msg.objects[1].label == "pedestrian" and msg.objects[1].attribute == ""
    back = outputs.detections_from_objects_msg(msg)
    det = sample_detections()
    np.testing.assert_allclose(back.boxes, det.boxes, atol=1e-6)
    np.testing.assert_allclose(back.scores, det.scores)
    np.testing.assert_array_equal(back.labels, det.labels)
    np.testing.assert_array_equal(back.attributes, det.attributes)


def test_vision_detections_carry_class_name_score_and_box():
    pytest.importorskip("vision_msgs.msg")
    msg = outputs.detection3d_array_msg(sample_detections(), make_header(5, "LIDAR_TOP"))
    first = msg.detections[0]
    assert first.results[0].hypothesis.class_id == "car"
    assert first.results[0].hypothesis.score == pytest.approx(0.9)
    q = first.bbox.center.orientation
    assert geo.quat_wxyz_to_yaw([q.w, q.x, q.y, q.z]) == pytest.approx(0.7)
    assert first.header.frame_id == "LIDAR_TOP"


def test_markers_start_with_deleteall_and_draw_boxes_labels_and_arrows_for_moving_objects():
    from visualization_msgs.msg import Marker

    msg = outputs.markers_msg(sample_detections(), make_header(5, "LIDAR_TOP"), min_score=0.1)
    assert msg.markers[0].action == Marker.DELETEALL
    types = [m.type for m in msg.markers[1:]]
    assert types.count(Marker.LINE_LIST) == 1 and types.count(Marker.TEXT_VIEW_FACING) == 2
    assert types.count(Marker.ARROW) == 1                 # the pedestrian stands still
    outlines = msg.markers[1]
    assert len(outlines.points) == 2 * 24 and len(outlines.colors) == 2 * 24   # 12 edges per box
    xs = [p.x for p in outlines.points[:24]]
    assert min(xs) > 10 - 2.6 and max(xs) < 10 + 2.6
    assert outlines.colors[0].r == outputs.CLASS_COLORS["car"][0]
    assert outlines.colors[24].b == outputs.CLASS_COLORS["pedestrian"][2]
    assert msg.markers[2].text.startswith("car 0.90")
    only_confident = outputs.markers_msg(sample_detections(), make_header(5, "LIDAR_TOP"), min_score=0.5)
    assert len(only_confident.markers) == 1 + 3


def test_occupancy_grid_is_probability_times_100_with_x_along_columns():
    probs = np.zeros((len(MAP_CLASSES), 4, 3), np.float32)
    probs[0, 3, 0] = 0.87                 # x index 3, y index 0
    probs[5, 0, 2] = 1.0
    grids = outputs.occupancy_grids(BEVMap(probs, 0.5, -1.0, -0.75), make_header(7, "LIDAR_TOP"))
    assert list(grids) == list(MAP_CLASSES)
    grid = grids["drivable_area"]
    assert (grid.info.width, grid.info.height) == (4, 3) and grid.info.resolution == 0.5
    assert (grid.info.origin.position.x, grid.info.origin.position.y) == (-1.0, -0.75)
    data = np.array(grid.data, np.int8).reshape(3, 4)
    assert data[0, 3] == 87 and data.sum() == 87
    assert np.array(grids["divider"].data).reshape(3, 4)[2, 0] == 100


def test_diagnostic_array_keeps_level_message_and_values():
    from builtin_interfaces.msg import Time
    msg = outputs.diagnostic_array_msg([StatusEntry("perception: inputs", WARN, "CAM_BACK silent",
                                                    {"rate_lidar_hz": "20.0"})], Time(sec=3))
    status = msg.status[0]
    assert status.level == bytes([WARN]) and status.message == "CAM_BACK silent"
    assert status.values[0].key == "rate_lidar_hz" and status.values[0].value == "20.0"


def test_empty_detections_give_empty_messages_and_a_lone_deleteall():
    pytest.importorskip("bevfusion_msgs.msg")
    header = make_header(9, "LIDAR_TOP")
    assert len(outputs.detected_objects_msg(Detections.empty(), header).objects) == 0
    assert len(outputs.markers_msg(Detections.empty(), header).markers) == 1


def test_reduced_jpeg_decoding_matches_a_downscaled_full_decode():
    import cv2

    from bevfusion_ros.ros.image import compressed_image_to_rgb, rgb_to_compressed_image
    from bevfusion_ros.ros.ingest import decode_compressed_reduced

    yy, xx = np.mgrid[0:900, 0:1600]
    image = np.stack([(xx / 7) % 255, (yy / 3) % 255, (xx + yy) / 10 % 255], -1).astype(np.uint8)
    msg = rgb_to_compressed_image(image, "CAM_FRONT", 0, quality=95)
    reduced = decode_compressed_reduced(msg, 4)
    assert reduced.shape == (225, 400, 3)
    reference = cv2.resize(compressed_image_to_rgb(msg), (400, 225), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - reference.astype(int)).mean() < 3.0
    msg.data = b"\xff\xd8 broken"
    with pytest.raises(ValueError):
        decode_compressed_reduced(msg, 4)
