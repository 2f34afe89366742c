"""Temporal map fusion (model/map_fusion.py): what an earlier frame saw stays where it is on the ground as
the car moves; noise averages out; anything that breaks the chain of poses starts a new history."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bevfusion_ros.frame import BEVMap
from bevfusion_ros.model.config import MapFusionConfig
from bevfusion_ros.model.map_fusion import TemporalMapFusion

RES, X_MIN, N = 0.5, -10.0, 40          # 20 m x 20 m at 0.5 m
CONFIG = MapFusionConfig(enabled=True, time_constant_s=5.0, max_gap_s=2.0, max_speed=50.0)
LOGIT = 3.0
P_HIGH = 1 / (1 + math.exp(-LOGIT))


def pose(x=0.0, y=0.0, yaw=0.0):
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:3, 3] = [x, y, 1.8]
    return T


def bev(probs):
    return BEVMap(probs=np.asarray(probs, np.float32), resolution=RES, x_min=X_MIN, y_min=X_MIN)


def blank(channels=1):
    return np.full((channels, N, N), 0.5, np.float32)


def cell(x, y):
    """Index of the cell holding the point (x, y) of the LiDAR frame."""
    return int((x - X_MIN) / RES), int((y - X_MIN) / RES)


def test_a_mark_seen_earlier_stays_on_the_same_ground_as_the_car_drives_and_turns():
    fusion = TemporalMapFusion(CONFIG)
    first = blank()
    first[0][cell(4.25, 2.25)] = P_HIGH                        # a painted cell 4 m ahead, 2 m left
    fusion.update(bev(first), pose(), 0)
    # 3 m further along x and turned 90 degrees left: the mark is now 1 m ahead... in the new frame it lies
    # at (x, y) = (2 - 0.25, -(4 - 3) - 0.25) rotated: global (4.25, 2.25) -> current (2.25, -1.25)
    out = fusion.update(bev(blank()), pose(3.0, 0.0, math.pi / 2), 500_000).probs[0]
    decay = math.exp(-0.5 / CONFIG.time_constant_s)
    expected = 1 / (1 + math.exp(-decay * LOGIT / (1 + decay)))
    assert out[cell(2.25, -1.25)] == pytest.approx(expected, abs=1e-4)
    assert np.argmax(out) == np.ravel_multi_index(cell(2.25, -1.25), out.shape)
    assert out[cell(4.25, 2.25)] == pytest.approx(0.5, abs=1e-6)        # nothing left at the old place


def test_repeated_noisy_views_of_a_static_map_average_out():
    rng = np.random.default_rng(0)
    truth = np.zeros((1, N, N), bool)
    truth[0, 10:30, 15:25] = True                                   # a road 10 m wide, in global terms
    fusion = TemporalMapFusion(CONFIG)
    single_errors, fused_errors = [], []
    for step in range(8):
        x = 0.5 * step                                              # driving forward 0.5 m per frame
        shift = round(x / RES)
        seen = np.zeros_like(truth)
        seen[:, : N - shift] = truth[:, shift:]                     # the same road in the moving frame
        logits = np.where(seen, 1.0, -1.0) + rng.normal(0.0, 2.0, seen.shape)
        probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
        fused = fusion.update(bev(probs), pose(x), step * 100_000).probs
        region = (slice(None), slice(0, N - 8))                    # cells every frame saw
        single_errors.append(np.mean((probs[region] > 0.5) != seen[region]))
        fused_errors.append(np.mean((fused[region] > 0.5) != seen[region]))
    assert fused_errors[0] == single_errors[0]                       # first frame: nothing to fuse
    assert np.mean(fused_errors[4:]) < 0.5 * np.mean(single_errors[4:])


def test_cells_never_seen_before_take_the_current_frame_as_is():
    fusion = TemporalMapFusion(CONFIG)
    fusion.update(bev(blank()), pose(), 0)
    now = blank()
    now[0, -1, 5] = 0.9                                             # the front row: new ground after 5 m
    out = fusion.update(bev(now), pose(5.0), 200_000).probs
    assert out[0, -1, 5] == pytest.approx(0.9, abs=1e-5)


@pytest.mark.parametrize("why,second_pose,second_stamp,sequence", [
    ("time_not_forward", pose(1.0), -100_000, None),
    ("time_not_forward", pose(1.0), 0, None),
    ("gap", pose(1.0), 2_500_000, None),
    ("pose_jump", pose(30.0), 100_000, None),                      # 300 m/s
    ("new_sequence", pose(1.0), 100_000, "scene-2"),
])
def test_anything_that_breaks_the_chain_of_poses_starts_a_new_history(why, second_pose, second_stamp, sequence):
    fusion = TemporalMapFusion(CONFIG)
    first = blank()
    first[0] = 0.95
    fusion.update(bev(first), pose(), 0)
    now = blank()
    now[0, 3, 3] = 0.2
    out = fusion.update(bev(now), second_pose, second_stamp, sequence=sequence).probs
    np.testing.assert_allclose(out, now, atol=1e-6)
    assert fusion.resets == 1 and fusion.last_reset_reason == why


def test_a_missing_or_broken_pose_passes_the_frame_through_and_forgets():
    fusion = TemporalMapFusion(CONFIG)
    first = blank()
    first[0] = 0.95
    fusion.update(bev(first), pose(), 0)
    broken = pose(1.0)
    broken[0, 3] = np.nan
    for T in (None, broken, np.eye(3)):                                  # a 3x3 is no pose either
        out = fusion.update(bev(blank()), T, 100_000).probs
        np.testing.assert_allclose(out, blank(), atol=1e-6)
    # and the next good frame does not reach back past the break
    out = fusion.update(bev(blank()), pose(1.0), 200_000).probs
    np.testing.assert_allclose(out, blank(), atol=1e-6)


def test_saturated_or_nan_probabilities_stay_finite_and_bounded():
    fusion = TemporalMapFusion(CONFIG)
    wild = blank(2)
    wild[0] = 1.0
    wild[1] = 0.0
    wild[1, 0, 0] = np.nan
    fusion.update(bev(wild), pose(), 0)
    out = fusion.update(bev(blank(2)), pose(0.5), 100_000).probs
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    # a saturated frame counts as p = 1 - 1e-4, so one later confident frame of the opposite still moves it
    assert 0.5 < out[0, 5, 5] < 1 - 1e-4


def test_disabled_fusion_and_a_missing_map_are_passed_through():
    off = TemporalMapFusion(MapFusionConfig(enabled=False))
    m = bev(blank())
    assert off.update(m, pose(), 0) is m
    assert TemporalMapFusion(CONFIG).update(None, pose(), 0) is None
