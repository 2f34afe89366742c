"""The occlusion filter's blind band above off-ground occluders, and the polish stage's point re-selection."""
import numpy as np

from bevfusion_ros.calibration.problem import ProblemOptions, build_problem, occluded_points, reselect_points
from bevfusion_ros.calibration.semalign import Calibrator

# A camera looking along LiDAR +x, 0.3 m below the LiDAR (as the nuScenes cameras sit below LIDAR_TOP).
R_CAM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM_LIDAR = np.eye(4)
T_CAM_LIDAR[:3, :3] = R_CAM_LIDAR
T_CAM_LIDAR[:3, 3] = [0.0, -0.3, 0.0]
K = np.array([[1000.0, 0.0, 800.0], [0.0, 1000.0, 450.0], [0.0, 0.0, 1.0]])
SIZE = (1600, 900)
RING_DEG = 1.33


def _wall_and_background():
    """A wall 10 m ahead scanned by rings 1.33 deg apart (top ring level with the LiDAR), and one point 20 m
    ahead that the LiDAR sees 0.57 deg over the wall's top ring. The camera, 0.3 m lower, sees that point
    behind the wall (its ray crosses x = 10 m at z = -0.05 m, below the top ring)."""
    elev = -np.radians(RING_DEG) * np.arange(0, 6)
    ys = np.linspace(-1.0, 1.0, 60)
    wall = np.array([[10.0, y, 10.0 * np.tan(e)] for e in elev for y in ys])
    background = np.array([[20.0, 0.0, 0.2]])
    return np.concatenate([wall, background]), len(wall)


def test_point_seen_over_an_object_top_by_the_higher_lidar_is_occluded_with_the_blind_band():
    points, n_wall = _wall_and_background()
    occluders = np.arange(len(points)) < n_wall
    without = occluded_points(points, T_CAM_LIDAR, K, SIZE)
    with_band = occluded_points(points, T_CAM_LIDAR, K, SIZE, occluders=occluders, lift_deg=1.5)
    assert not without[-1]          # the plain grid test misses it: no wall point shares its cell
    assert with_band[-1]
    assert not with_band[:n_wall].any()     # the wall does not hide itself


def test_flat_ground_is_not_an_occluder_and_does_not_hide_itself():
    elev = -np.radians(np.arange(8.0, 30.0, RING_DEG))
    az = np.radians(np.linspace(-30, 30, 121))
    ranges = 1.84 / np.tan(-elev)
    ground = np.array([[r * np.cos(a), r * np.sin(a), -1.84] for r in ranges for a in az])
    hidden = occluded_points(ground, T_CAM_LIDAR, K, SIZE, occluders=np.zeros(len(ground), bool), lift_deg=1.5)
    assert not hidden.any()


def test_reselect_points_keeps_groups_and_fields_and_follows_the_new_prior(toy, fast_config, perturb):
    frames, truth = toy
    cameras = list(truth)
    options = Calibrator(fast_config(mode="rig"))._options()
    far = {name: perturb(T, (0.0, 0.0, 25.0), (0.0, 0.0, 0.0)) for name, T in truth.items()}
    problem = build_problem(frames, cameras, far, options, np.radians(2.0), left=far)
    again = reselect_points(problem, frames, far, options, np.radians(2.0))
    moved = reselect_points(problem, frames, truth, options, np.radians(2.0))
    assert again.groups == problem.groups and moved.groups == problem.groups
    assert all(a is b for a, b in zip(moved.fields, problem.fields))
    assert np.array_equal(again.point_weights.sum(1).numpy(), problem.point_weights.sum(1).numpy())
    assert not np.array_equal(moved.point_weights.sum(1).numpy(), problem.point_weights.sum(1).numpy())


def test_polish_does_not_worsen_a_rig_calibration(toy, fast_config, perturb):
    from bevfusion_ros.calibration import lie
    frames, truth = toy
    delta = perturb(np.eye(4), (-3.0, 2.0, 5.0), (0.25, 0.2, -0.1))
    prior = {name: T @ delta for name, T in truth.items()}
    errors = {}
    for polish in (None, fast_config().polish):
        result = Calibrator(fast_config(mode="rig", polish=polish)).calibrate(frames, prior)
        assert result.success, result.reason
        errors[polish is not None] = lie.transform_error(result.T["CAM_FRONT"], truth["CAM_FRONT"])[1]
    assert errors[True] <= errors[False] + 0.005, errors
