"""How replay-eval scores keyframes whose own sweep the node skipped: the newest earlier output, at most
LATEST_OUTPUT_MAX_AGE_S old, its boxes moved along their velocities to the keyframe's time."""
from __future__ import annotations

import numpy as np

from bevfusion_ros.eval.replay import extrapolate, latest_output_stamp
from bevfusion_ros.frame import Detections


def test_a_keyframe_takes_its_own_output_else_the_newest_earlier_one_within_the_age_limit():
    outputs = [1_000_000, 1_100_000, 1_400_000]
    assert latest_output_stamp(outputs, 1_100_000, 0.5) == 1_100_000          # its own
    assert latest_output_stamp(outputs, 1_350_000, 0.5) == 1_100_000          # 0.25 s old
    assert latest_output_stamp(outputs, 1_350_000, 0.2) is None               # too old
    assert latest_output_stamp(outputs, 999_999, 0.5) is None                 # nothing before it
    assert latest_output_stamp([], 1_000_000, 0.5) is None


def test_an_older_output_is_moved_along_each_box_velocity():
    boxes = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.3, 8.0, -2.0],
                      [0.0, 5.0, -1.0, 0.5, 0.5, 1.8, 0.0, np.nan, 0.0]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 5]), np.array([-1, -1]))
    moved = extrapolate(dets, 0.25)
    np.testing.assert_allclose(moved.boxes[0, :2], [12.0, -0.5])
    np.testing.assert_allclose(moved.boxes[1, :2], [0.0, 5.0])                # unknown velocity: stays
    np.testing.assert_array_equal(moved.boxes[:, 2:], boxes[:, 2:])           # size, yaw, velocity kept
    np.testing.assert_array_equal(dets.boxes, boxes)                          # the input is not modified
    assert extrapolate(Detections.empty(), 0.1).boxes.shape == (0, 9)
