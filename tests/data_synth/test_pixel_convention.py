"""The synthetic camera samples every layer at pixel centres on integer coordinates (u = fx x / z + cx, as
OpenCV, nuScenes and geometry.project_to_image): label masks must line up with projected LiDAR points to
well under a pixel, or a calibration against them is biased (it was, by ~1 cm in height)."""
import numpy as np

from bevfusion_ros.data.synth.camera import CameraRenderer, _convex_cover
from bevfusion_ros.data.synth.rig import load_rig


def test_ground_pixel_is_the_ground_point_that_projects_onto_its_centre():
    camera = load_rig().camera("CAM_FRONT")
    renderer = CameraRenderer(camera, np.array([1.0, 0.0, 1.0]))
    rows, cols = np.nonzero(renderer.ground_bool)
    pick = np.linspace(0, len(rows) - 1, 50).astype(int)
    i, j = rows[pick], cols[pick]
    xy = renderer.ground_xy_ego[i, j].astype(np.float64)
    ego = np.concatenate([xy, np.zeros((len(xy), 1)), np.ones((len(xy), 1))], 1)
    cam = (np.linalg.inv(camera.T_ego_sensor) @ ego.T).T[:, :3]
    K = camera.intrinsic
    uv = cam[:, :2] / cam[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    assert np.abs(uv - np.stack([j, i], 1)).max() < 0.01


def test_faces_cover_exactly_the_pixels_whose_centre_is_inside():
    square = np.array([[0.6, 0.6], [3.4, 0.6], [3.4, 3.4], [0.6, 3.4]])
    cover = _convex_cover(square, 5, 5)
    expected = np.zeros((5, 5), bool)
    expected[1:4, 1:4] = True
    assert np.array_equal(cover, expected)
    assert np.array_equal(_convex_cover(square[::-1], 5, 5), expected)     # either orientation
    wide = np.array([[0.4, 0.4], [3.6, 0.4], [3.6, 3.6], [0.4, 3.6]])      # fillPoly would fill 0..4 here
    assert np.array_equal(_convex_cover(wide, 5, 5), expected)
