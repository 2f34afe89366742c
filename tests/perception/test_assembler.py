"""Frame assembly: multi-sweep motion compensation against a hand-built TF history, camera matching and
masking, and the bad inputs the assembler must reject or note without failing."""
from __future__ import annotations

import numpy as np
import pytest

from bevfusion_ros import geometry as geo
from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.perception.assembler import (AssemblerConfig, FrameAssembler, InputRejected,
                                                accumulate_sweeps, sanitize_points)


class DictTransforms:
    """A TF history: static T_base_sensor and a dynamic map->base_link pose per stamp (exact stamps only)."""

    def __init__(self):
        self.static: dict[str, np.ndarray] = {}
        self.poses: dict[int, np.ndarray] = {}

    def lookup(self, target, source, stamp_us):
        if target == "base_link" and source in self.static:
            return self.static[source]
        if target == "map" and source == "base_link" and stamp_us in self.poses:
            return self.poses[stamp_us]
        raise LookupError(f"{target} <- {source} @ {stamp_us}")


def ego_pose(t_s: float) -> np.ndarray:
    """The ego drives a curve: 10 m/s forward, yawing at 0.3 rad/s, climbing slightly."""
    yaw = 0.3 * t_s
    return geo.make_transform(geo.yaw_to_quat_wxyz(yaw), [10.0 * t_s, 2.0 * t_s ** 2, 0.1 * t_s])


T_BASE_LIDAR = geo.make_transform(geo.yaw_to_quat_wxyz(np.pi / 2), [0.9, 0.0, 1.8])
T_BASE_CAM = geo.make_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), [1.7, 0.0, 1.5])


def make_rig(sweeps=5, **kwargs):
    kwargs.setdefault("input_wait_s", 0.0)
    kwargs.setdefault("startup_sweeps", 0)
    tf = DictTransforms()
    tf.static["LIDAR_TOP"] = T_BASE_LIDAR
    for name in CAMERA_NAMES:
        tf.static[name] = T_BASE_CAM
    asm = FrameAssembler(AssemblerConfig(sweeps=sweeps, **kwargs), tf)
    return tf, asm


def world_points_in_lidar(world: np.ndarray, T_map_base: np.ndarray) -> np.ndarray:
    T_lidar_map = geo.invert_transform(T_map_base @ T_BASE_LIDAR)
    xyz = world @ T_lidar_map[:3, :3].T + T_lidar_map[:3, 3]
    return np.concatenate([xyz, np.arange(len(world))[:, None]], 1).astype(np.float32)


def test_previous_sweeps_of_a_static_world_land_on_the_pivot_sweep():
    tf, asm = make_rig(sweeps=5)
    world = np.array([[20.0, 5.0, 0.5], [-15.0, 30.0, 1.0], [40.0, -8.0, -1.0]])
    stamps = [1_000_000 + 50_000 * i for i in range(6)]
    for stamp in stamps:
        tf.poses[stamp] = ego_pose(stamp * 1e-6)
        sweep = asm.add_lidar(stamp, "LIDAR_TOP", world_points_in_lidar(world, tf.poses[stamp]))
    frame, notes = asm.assemble(sweep)
    assert notes == [f"camera_masked:{name}:no_camera_info" for name in CAMERA_NAMES]
    assert frame.points.shape == (5 * 3, 5) and frame.points.dtype == np.float32
    expected = world_points_in_lidar(world, tf.poses[stamps[-1]])
    for k in range(5):                      # pivot first, then previous sweeps newest first
        block = frame.points[3 * k: 3 * k + 3]
        np.testing.assert_allclose(block[:, :3], expected[:, :3], atol=2e-3)
        np.testing.assert_allclose(block[:, 3], np.arange(3))            # intensity carried through
        np.testing.assert_allclose(block[:, 4], k * 0.05, atol=1e-6)       # Δt in seconds
    np.testing.assert_allclose(frame.T_ego_lidar, T_BASE_LIDAR)
    np.testing.assert_allclose(frame.T_global_ego, tf.poses[stamps[-1]], atol=1e-9)


def test_accumulation_removes_close_points_from_previous_sweeps_only():
    pivot = np.array([[0.5, 0.5, 0, 1], [5, 5, 0, 1]], np.float32)
    prev = np.array([[0.5, -0.5, 0, 2], [0.5, 3.0, 0, 2]], np.float32)
    out = accumulate_sweeps(pivot, 100_000, np.eye(4), [(prev, 50_000, np.eye(4))], remove_close_radius=1.0)
    np.testing.assert_allclose(out[:, :2], [[0.5, 0.5], [5, 5], [0.5, 3.0]])
    np.testing.assert_allclose(out[:, 4], [0, 0, 0.05], atol=1e-7)


def test_without_ego_pose_the_frame_has_the_pivot_sweep_only_and_says_so():
    tf, asm = make_rig(sweeps=3)
    for stamp in (0, 50_000, 100_000):
        sweep = asm.add_lidar(stamp, "LIDAR_TOP", np.ones((4, 4), np.float32) * 5)
    frame, notes = asm.assemble(sweep)
    assert len(frame.points) == 4 and "no_ego_pose" in notes and frame.T_global_ego is None


def test_sweeps_older_than_the_gap_or_beyond_the_count_are_not_accumulated():
    tf, asm = make_rig(sweeps=3, max_sweep_gap_s=0.5)
    for stamp in (0, 1_000_000, 1_050_000, 1_100_000, 1_150_000):
        tf.poses[stamp] = ego_pose(stamp * 1e-6)
        sweep = asm.add_lidar(stamp, "LIDAR_TOP", np.full((2, 4), 10, np.float32))
    frame, _ = asm.assemble(sweep)
    np.testing.assert_allclose(np.unique(frame.points[:, 4]), [0, 0.05, 0.1], atol=1e-6)


def test_sanitize_drops_nonfinite_points_and_decimates_huge_clouds():
    pts = np.ones((10, 4), np.float32)
    pts[3, 0] = np.nan
    pts[7, 2] = np.inf
    clean, notes = sanitize_points(pts, 100)
    assert len(clean) == 8 and notes == ["nonfinite_points"]
    clean, notes = sanitize_points(np.ones((1_000_000, 4), np.float32), 300_000)
    assert len(clean) <= 300_000 and notes == ["oversized_cloud"]


@pytest.mark.parametrize("points,reason", [
    (np.zeros((0, 4), np.float32), "empty_cloud"),
    (np.full((5, 4), np.nan, np.float32), "empty_cloud"),
    (np.zeros((5, 3), np.float32), "bad_cloud_shape"),
])
def test_unusable_clouds_are_rejected_with_a_reason(points, reason):
    _, asm = make_rig()
    with pytest.raises(InputRejected) as err:
        asm.add_lidar(1, "LIDAR_TOP", points)
    assert err.value.reason == reason


def test_duplicate_stamps_are_rejected_and_backwards_stamps_restart_the_history():
    tf, asm = make_rig(sweeps=3)
    asm.add_lidar(100, "LIDAR_TOP", np.ones((3, 4), np.float32) * 9)
    with pytest.raises(InputRejected, match="duplicate_stamp"):
        asm.add_lidar(100, "LIDAR_TOP", np.ones((3, 4), np.float32) * 9)
    sweep = asm.add_lidar(50, "LIDAR_TOP", np.ones((3, 4), np.float32) * 9)
    assert sweep.notes == ["stamp_backwards"]
    tf.poses[50] = np.eye(4)
    frame, _ = asm.assemble(sweep)
    assert len(frame.points) == 3 * 3 and (frame.points[:, 4] == 0).all()    # pivot padded, nothing older


def test_without_previous_sweeps_the_pivot_is_repeated_like_pad_empty_sweeps():
    tf, asm = make_rig(sweeps=3)
    tf.poses[7] = np.eye(4)
    pts = np.array([[0.5, 0.5, 0, 1], [5, 5, 0, 2]], np.float32)
    frame, _ = asm.assemble(asm.add_lidar(7, "LIDAR_TOP", pts))
    np.testing.assert_allclose(frame.points[:, :4], [[0.5, 0.5, 0, 1], [5, 5, 0, 2], [5, 5, 0, 2], [5, 5, 0, 2]])
    assert (frame.points[:, 4] == 0).all()


def test_a_cloud_in_an_unknown_frame_is_rejected_at_assembly():
    _, asm = make_rig()
    sweep = asm.add_lidar(1, "velodyne", np.ones((3, 4), np.float32))
    with pytest.raises(InputRejected, match="unknown_frame"):
        asm.assemble(sweep)


def rgb(h=90, w=160, value=0):
    return np.full((h, w, 3), value, np.uint8)


def test_each_camera_takes_the_image_closest_to_the_lidar_stamp_within_the_delay():
    tf, asm = make_rig(sweeps=1, max_camera_lidar_delay_s=0.05)
    K = np.array([[100, 0, 80], [0, 100, 45], [0, 0, 1]], float)
    for name in CAMERA_NAMES:
        asm.set_camera_info(name, K, 160, 90, name)
    asm.add_image("CAM_FRONT", 900_000, "CAM_FRONT", lambda: rgb(value=1))
    asm.add_image("CAM_FRONT", 990_000, "CAM_FRONT", lambda: rgb(value=2))
    asm.add_image("CAM_BACK", 900_000, "CAM_BACK", lambda: rgb(value=3))            # too old
    asm.add_image("CAM_FRONT_LEFT", 1_000_000, "CAM_FRONT_LEFT", lambda: b"corrupt")  # decoder garbage
    asm.add_image("CAM_FRONT_RIGHT", 1_000_000, "CAM_FRONT_RIGHT", lambda: rgb(45, 80))  # wrong size

    def broken():
        raise ValueError("not a JPEG")
    asm.add_image("CAM_BACK_LEFT", 1_000_000, "CAM_BACK_LEFT", broken)
    sweep = asm.add_lidar(1_000_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    frame, notes = asm.assemble(sweep)
    cams = {cam.name: cam for cam in frame.cameras}
    assert [cam.name for cam in frame.cameras] == list(CAMERA_NAMES)
    assert cams["CAM_FRONT"].image[0, 0, 0] == 2 and cams["CAM_FRONT"].stamp_us == 990_000
    np.testing.assert_allclose(cams["CAM_FRONT"].T_lidar_cam, geo.invert_transform(T_BASE_LIDAR) @ T_BASE_CAM)
    np.testing.assert_allclose(cams["CAM_FRONT"].intrinsic, K)
    assert set(frame.masked_cameras) == set(CAMERA_NAMES) - {"CAM_FRONT"}
    assert set(notes) == {"camera_masked:CAM_BACK:no_recent_image",
                          "camera_masked:CAM_FRONT_LEFT:decode_error",
                          "camera_masked:CAM_FRONT_RIGHT:image_size_mismatch",
                          "camera_masked:CAM_BACK_LEFT:decode_error",
                          "camera_masked:CAM_BACK_RIGHT:no_recent_image"}


def test_images_are_decoded_once_and_only_when_used():
    tf, asm = make_rig(sweeps=1)
    calls = []
    asm.set_camera_info("CAM_FRONT", np.eye(3) * 100 + np.diag([0, 0, -99]), 160, 90, "CAM_FRONT")

    def decode():
        calls.append(1)
        return rgb()
    asm.add_image("CAM_FRONT", 0, "CAM_FRONT", decode)
    asm.add_image("CAM_FRONT", 10_000_000, "CAM_FRONT", lambda: calls.append("never") or rgb())
    for stamp in (20_000, 40_000):
        frame, _ = asm.assemble(asm.add_lidar(stamp, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5))
        assert not frame.cameras[0].masked
    assert calls == [1]


def test_a_deferred_frame_has_its_points_at_once_and_its_cameras_when_asked():
    """The node hands the LiDAR part to the model first; the cameras (decoding on the decoder threads
    meanwhile) follow, with their notes, when the model's camera side asks."""
    tf, asm = make_rig(sweeps=1, max_camera_lidar_delay_s=0.05, decode_threads=2)
    K = np.array([[100, 0, 80], [0, 100, 45], [0, 0, 1]], float)
    for name in CAMERA_NAMES:
        asm.set_camera_info(name, K, 160, 90, name)
    asm.add_image("CAM_FRONT", 990_000, "CAM_FRONT", lambda: rgb(value=2))
    sweep = asm.add_lidar(1_000_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    frame, notes, cameras = asm.assemble_deferred(sweep)
    assert frame.cameras == [] and len(frame.points) == 3 and notes == []
    listed = cameras()
    assert frame.cameras is listed and cameras() is listed                # finished once
    assert [cam.name for cam in listed] == list(CAMERA_NAMES) and listed[0].image[0, 0, 0] == 2
    assert set(notes) == {f"camera_masked:{name}:no_recent_image" for name in CAMERA_NAMES[1:]}
    assert cameras.elapsed_ms >= 0


def test_calibration_overrides_tf_extrinsics_and_reports_changes():
    tf, asm = make_rig(sweeps=1)
    asm.set_camera_info("CAM_FRONT", np.diag([100.0, 100.0, 1.0]), 160, 90, "CAM_FRONT")
    asm.add_image("CAM_FRONT", 0, "CAM_FRONT", rgb)
    moved = T_BASE_CAM.copy()
    moved[0, 3] += 0.25
    assert asm.set_calibration({"CAM_FRONT": moved}, "calib/rig.yaml")
    assert not asm.set_calibration({"CAM_FRONT": moved.copy()}, "calib/rig.yaml")
    frame, _ = asm.assemble(asm.add_lidar(1000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5))
    np.testing.assert_allclose(frame.cameras[0].T_lidar_cam, geo.invert_transform(T_BASE_LIDAR) @ moved)
    assert asm.calibration_source == "calib/rig.yaml"


def test_bad_camera_info_is_rejected():
    _, asm = make_rig()
    with pytest.raises(InputRejected, match="bad_camera_info"):
        asm.set_camera_info("CAM_FRONT", np.zeros((3, 3)), 160, 90, "CAM_FRONT")
    with pytest.raises(InputRejected, match="unknown_camera"):
        asm.add_image("CAM_TOP", 0, "CAM_TOP", rgb)


def test_an_image_due_just_before_the_sweep_is_waited_for_briefly():
    import threading
    import time
    tf, asm = make_rig(sweeps=1, input_wait_s=0.5)
    K = np.diag([100.0, 100.0, 1.0])
    asm.set_camera_info("CAM_FRONT", K, 160, 90, "CAM_FRONT")
    asm.add_image("CAM_FRONT", 0, "CAM_FRONT", lambda: rgb(value=1))
    time.sleep(0.08)                                          # the camera runs at ~12 Hz in wall time too
    asm.add_image("CAM_FRONT", 83_333, "CAM_FRONT", lambda: rgb(value=2))
    sweep = asm.add_lidar(166_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)   # next image due at 166_666
    assert asm.pending_inputs(sweep) == ["CAM_FRONT"]
    late = threading.Timer(0.04, lambda: asm.add_image("CAM_FRONT", 166_666, "CAM_FRONT", lambda: rgb(value=3)))
    late.start()
    start = time.monotonic()
    frame, notes = asm.assemble(sweep)
    assert frame.cameras[0].image[0, 0, 0] == 3 and frame.cameras[0].stamp_us == 166_666
    assert 0.03 < time.monotonic() - start < 0.4 and not any(n.startswith("camera_late") for n in notes)


def test_no_wait_for_images_due_after_the_sweep_or_for_a_stopped_camera():
    import time
    tf, asm = make_rig(sweeps=1, input_wait_s=0.5)
    asm.set_camera_info("CAM_FRONT", np.diag([100.0, 100.0, 1.0]), 160, 90, "CAM_FRONT")
    asm.add_image("CAM_FRONT", 0, "CAM_FRONT", rgb)
    asm.add_image("CAM_FRONT", 83_333, "CAM_FRONT", rgb)
    sweep = asm.add_lidar(120_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    assert asm.pending_inputs(sweep) == []                    # next one due 46 ms after the sweep
    later = asm.add_lidar(166_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    assert asm.pending_inputs(later, now=time.monotonic() + 5.0) == []   # silent for ages: stopped
    start = time.monotonic()
    frame, notes = asm.assemble(sweep)
    assert time.monotonic() - start < 0.1 and frame.cameras[0].stamp_us == 83_333


def test_transforms_and_camera_info_in_flight_are_waited_for():
    import threading
    import time

    class StreamingTransforms(DictTransforms):
        def time_range(self, child):
            return (min(self.poses), max(self.poses)) if self.poses and child == "base_link" else None

    tf = StreamingTransforms()
    asm = FrameAssembler(AssemblerConfig(sweeps=1, input_wait_s=0.5, startup_sweeps=0,
                                         camera_names=("CAM_FRONT",)), tf)
    tf.poses[500_000] = np.eye(4)
    asm.add_image("CAM_FRONT", 990_000, "CAM_FRONT", rgb)
    sweep = asm.add_lidar(1_000_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    assert asm.pending_inputs(sweep) == ["tf_static", "tf", "CAM_FRONT"]

    def arrive():
        tf.static["LIDAR_TOP"] = T_BASE_LIDAR
        tf.static["CAM_FRONT"] = T_BASE_CAM
        tf.poses[1_000_000] = np.eye(4)
        asm.set_camera_info("CAM_FRONT", np.diag([100.0, 100.0, 1.0]), 160, 90, "CAM_FRONT", 990_000)
    threading.Timer(0.05, arrive).start()
    frame, notes = asm.assemble(sweep)
    assert not frame.cameras[0].masked and frame.T_global_ego is not None
    assert not any(n.startswith("input_late") for n in notes)
    # camera_info announcing an image that is not here yet
    asm.set_camera_info("CAM_FRONT", np.diag([100.0, 100.0, 1.0]), 160, 90, "CAM_FRONT", 1_040_000)
    tf.poses[1_050_000] = np.eye(4)
    assert asm.pending_inputs(asm.add_lidar(1_050_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)) == ["CAM_FRONT"]


def test_at_start_up_inputs_never_seen_are_waited_for_then_no_longer():
    tf, asm = make_rig(sweeps=1, startup_sweeps=2)
    first = asm.add_lidar(1_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    assert asm.pending_inputs(first) == list(CAMERA_NAMES)
    for stamp in (2_000, 3_000):
        later = asm.add_lidar(stamp, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5)
    assert asm.pending_inputs(later) == []            # a camera that never comes is not waited for forever


def test_images_decoded_at_reduced_scale_get_matching_intrinsics():
    from bevfusion_ros.perception.assembler import reduced_intrinsics

    tf, asm = make_rig(sweeps=1, image_reduction=4)
    K = np.array([[1266.4, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]])
    asm.set_camera_info("CAM_FRONT", K, 1600, 900, "CAM_FRONT")
    asm.add_image("CAM_FRONT", 0, "CAM_FRONT", lambda: rgb(225, 400))
    asm.set_camera_info("CAM_BACK", K, 1600, 900, "CAM_BACK")
    asm.add_image("CAM_BACK", 0, "CAM_BACK", lambda: rgb(450, 800))      # neither full nor 1/4: refused
    frame, notes = asm.assemble(asm.add_lidar(1_000, "LIDAR_TOP", np.ones((3, 4), np.float32) * 5))
    cams = {c.name: c for c in frame.cameras}
    np.testing.assert_allclose(cams["CAM_FRONT"].intrinsic, reduced_intrinsics(K, 4))
    assert "camera_masked:CAM_BACK:image_size_mismatch" in notes
    # the same 3D point lands on the same spot of the scene in both images
    point = np.array([[3.0, -1.0, 20.0]])
    uv_full, _ = geo.project_to_image(point, K)
    uv_reduced, _ = geo.project_to_image(point, reduced_intrinsics(K, 4))
    np.testing.assert_allclose(uv_reduced, (uv_full + 0.5) / 4 - 0.5)
