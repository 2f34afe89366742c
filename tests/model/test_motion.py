"""Velocity from the sweeps' points (model/motion.py): a rigid object seen in two ego-compensated sweeps
0.1 s apart is registered onto itself; what it cannot measure it leaves to the network."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros.classes import DETECTION_CLASSES
from bevfusion_ros.model.config import PointVelocityConfig
from bevfusion_ros.model.motion import point_velocities

CAR = DETECTION_CLASSES.index("car")
CONE = DETECTION_CLASSES.index("traffic_cone")
CONFIG = PointVelocityConfig(enabled=True)


def car_surface(rng, centre, yaw, n=400, size=(4.5, 1.9, 1.6)):
    """Points on the sides, ends and roof of a car-sized box standing on z = -1.8 (with a cabin step, so
    its length profile is not flat)."""
    length, width, height = size
    u = rng.uniform(-0.5, 0.5, (n, 3)) * [length, width, 1.0]
    face = rng.integers(0, 3, n)
    u[face == 0, 1] = np.sign(u[face == 0, 1]) * width / 2           # sides
    u[face == 1, 0] = np.sign(u[face == 1, 0]) * length / 2          # ends
    z = -1.8 + rng.uniform(0.3, height, n)
    z[face == 2] = -1.8 + np.where(u[face == 2, 0] < 0.3, height, 0.9)   # roof / bonnet
    c, s = np.cos(yaw), np.sin(yaw)
    xy = u[:, :2] @ np.array([[c, s], [-s, c]]) + centre
    return np.column_stack([xy, z])


def sweep_pair(rng, velocity, yaw=0.3, centre=(12.0, 4.0), dt=0.1, ground=True):
    """[N, 5] points: the car now (Δt 0) and dt seconds ago (moved back by velocity * dt), plus ground."""
    centre = np.asarray(centre, float)
    now = car_surface(rng, centre, yaw)
    before = car_surface(rng, centre - np.asarray(velocity) * dt, yaw)
    parts = [np.column_stack([now, np.ones(len(now)), np.zeros(len(now))]),
             np.column_stack([before, np.ones(len(before)), np.full(len(before), dt)])]
    if ground:
        for t in (0.0, dt):
            g = np.column_stack([rng.uniform(-30, 30, (3000, 2)), np.full(3000, -1.8), np.zeros(3000),
                                 np.full(3000, t)])
            parts.append(g)
    return np.concatenate(parts).astype(np.float32)


def car_box(yaw=0.3, centre=(12.0, 4.0), velocity=(0.0, 0.0)):
    return np.array([[*centre, -1.0, 4.5, 1.9, 1.6, yaw, *velocity]])


@pytest.mark.parametrize("velocity", [(8.0, 2.5), (-5.0, -1.5), (0.0, 0.0)])
def test_moving_and_static_cars_are_measured_to_a_fraction_of_a_metre_per_second(velocity):
    rng = np.random.default_rng(0)
    points = sweep_pair(rng, velocity)
    result = point_velocities(points, car_box(), np.array([CAR]), CONFIG)
    assert result.measured.tolist() == [True]
    np.testing.assert_allclose(result.velocity[0], velocity, atol=0.35)


def test_a_box_heading_the_wrong_way_or_off_axis_still_gives_the_true_velocity():
    rng = np.random.default_rng(1)
    velocity = np.array([8.0, 2.5])                       # along yaw 0.3
    points = sweep_pair(rng, velocity)
    for yaw in (0.3 + np.pi, 0.3 + np.radians(15)):
        result = point_velocities(points, car_box(yaw=yaw), np.array([CAR]), CONFIG)
        assert result.measured[0]
        np.testing.assert_allclose(result.velocity[0], velocity, atol=0.5)


def test_what_cannot_be_measured_keeps_the_networks_velocity():
    rng = np.random.default_rng(2)
    net = (1.5, -0.5)
    one_sweep = sweep_pair(rng, (8.0, 2.5))
    one_sweep[:, 4] = 0.0
    sparse = sweep_pair(rng, (8.0, 2.5), ground=False)[::100]      # 4 points per sweep on the car
    too_fast = sweep_pair(rng, (30.0, 9.0))                        # beyond max_speed: the peak is at the edge
    far_away = car_box(centre=(-40.0, -40.0), velocity=net)
    for points, box in ((one_sweep, car_box(velocity=net)), (sparse, car_box(velocity=net)),
                        (too_fast, car_box(velocity=net)), (sweep_pair(rng, (8.0, 2.5)), far_away)):
        result = point_velocities(points, box, np.array([CAR]), CONFIG)
        assert not result.measured[0]
        np.testing.assert_array_equal(result.velocity[0], net)


def test_static_classes_empty_input_and_bad_points_are_left_alone():
    rng = np.random.default_rng(3)
    points = sweep_pair(rng, (8.0, 2.5))
    cone = point_velocities(points, car_box(), np.array([CONE]), CONFIG)
    assert not cone.measured[0] and (cone.velocity == 0).all()
    empty = point_velocities(np.zeros((0, 5), np.float32), car_box(), np.array([CAR]), CONFIG)
    assert not empty.measured[0]
    none = point_velocities(points, np.zeros((0, 9)), np.zeros(0, np.int64), CONFIG)
    assert none.velocity.shape == (0, 2)
    noisy = points.copy()
    noisy[::50, :3] = np.nan
    noisy[1::50, 4] = np.inf
    result = point_velocities(noisy, car_box(), np.array([CAR]), CONFIG)
    assert result.measured[0]
    np.testing.assert_allclose(result.velocity[0], (8.0, 2.5), atol=0.35)


def test_boxes_beyond_the_cloud_on_any_side_are_not_measured():
    rng = np.random.default_rng(4)
    points = sweep_pair(rng, (8.0, 2.5), ground=False)
    for centre in ((-200.0, 4.0), (200.0, 4.0), (12.0, -200.0), (12.0, 200.0)):
        result = point_velocities(points, car_box(centre=centre), np.array([CAR]), CONFIG)
        assert not result.measured[0]


def test_a_non_finite_or_degenerate_box_is_skipped_not_fatal():
    rng = np.random.default_rng(5)
    points = sweep_pair(rng, (8.0, 2.5))
    boxes = np.concatenate([car_box(), car_box(), car_box()])
    boxes[1, 0] = np.nan
    boxes[2, 3] = 0.0
    result = point_velocities(points, boxes, np.array([CAR, CAR, CAR]), CONFIG)
    assert result.measured.tolist() == [True, False, False]
    np.testing.assert_allclose(result.velocity[0], (8.0, 2.5), atol=0.35)


def test_each_box_gets_the_answer_it_gets_alone_when_many_are_measured_together():
    """Registrations of one frame share batched FFTs: boxes of different sizes and speeds, some not
    measurable, must not leak into each other."""
    rng = np.random.default_rng(6)
    scenes = [((8.0, 2.5), (12.0, 4.0), (4.5, 1.9, 1.6)), ((-3.0, 1.0), (-15.0, 9.0), (10.0, 2.5, 3.0)),
              ((0.0, 0.0), (20.0, -12.0), (5.2, 2.1, 1.7))]
    parts, boxes = [], []
    for velocity, centre, size in scenes:
        now = car_surface(rng, np.asarray(centre), 0.3, size=size)
        before = car_surface(rng, np.asarray(centre) - np.asarray(velocity) * 0.1, 0.3, size=size)
        parts += [np.column_stack([now, np.ones(len(now)), np.zeros(len(now))]),
                  np.column_stack([before, np.ones(len(before)), np.full(len(before), 0.1)])]
        boxes.append([*centre, -1.8 + size[2] / 2, *size, 0.3, 0.5, 0.5])
    boxes.append([-25.0, -20.0, -1.0, 4.5, 1.9, 1.6, 0.3, 0.5, 0.5])        # no points there
    points, boxes = np.concatenate(parts).astype(np.float32), np.array(boxes)
    labels = np.full(len(boxes), CAR)
    together = point_velocities(points, boxes, labels, CONFIG)
    for k in range(len(boxes)):
        alone = point_velocities(points, boxes[k:k + 1], labels[:1], CONFIG)
        assert together.measured[k] == alone.measured[0]
        np.testing.assert_allclose(together.velocity[k], alone.velocity[0], atol=1e-9)
    assert together.measured.tolist() == [True, True, True, False]      # the last one has no points
    np.testing.assert_allclose(together.velocity[:3], [s[0] for s in scenes[:3]], atol=0.5)
