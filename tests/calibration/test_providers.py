"""Semantic label providers: box-derived labels on the real keyframe, and the ONNX segmentation hook."""
import numpy as np
import pytest
import torch

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.loss import alignment_loss
from bevfusion_ros.calibration.providers import (GROUND, INSTANCE_BASE, BoxLabelProvider, CameraView,
                                                 OnnxSegmentationProvider, load_sample_json, sample_semantic_frame)
from bevfusion_ros.calibration.semalign import Calibrator
from bevfusion_ros.errors import UserError


@pytest.fixture(scope="module")
def real(nuscenes_sample):
    record = load_sample_json(nuscenes_sample)
    return record, sample_semantic_frame(record)


def test_box_labels_on_the_real_keyframe(real):
    record, frame = real
    labels = frame.point_labels
    boxed = labels >= INSTANCE_BASE                   # one class per box (both sides rendered from the boxes)
    assert (labels == GROUND).sum() > 5000            # the road around the car
    assert boxed.sum() > 800                          # 69 annotated objects
    assert len(np.unique(labels[boxed])) > 20
    front = frame.cameras["CAM_FRONT"].labels
    assert (front == GROUND).mean() > 0.1 and (front >= INSTANCE_BASE).sum() > 10000
    # at the true extrinsics, points inside boxes land on their own box (z-ordering: near boxes win)
    view = record.views["CAM_FRONT"]
    T, K = view.T_cam_lidar, view.intrinsic
    pts = frame.points[boxed].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    cls = labels[boxed]
    front_of = pts[:, 2] > 1
    uv = np.round(pts[front_of, :2] / pts[front_of, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]).astype(int)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < 1600) & (uv[:, 1] >= 0) & (uv[:, 1] < 900)
    assert ok.sum() > 100
    assert (front[uv[ok, 1], uv[ok, 0]] == cls[front_of][ok]).mean() > 0.8


def test_real_keyframe_loss_is_lower_at_truth_than_at_a_degree_off(real, fast_config):
    record, frame = real
    truth = record.static_extrinsics()            # the frame carries each camera's ego motion
    calibrator = Calibrator(fast_config(mode="rig"))
    problem = calibrator._problem([frame], list(truth), truth, truth)
    xi = np.zeros((7, 6))
    for axis in range(3):
        xi[1 + 2 * axis, axis] = np.radians(1.0)
        xi[2 + 2 * axis, axis] = -np.radians(1.0)
    losses = alignment_loss(problem, lie.apply_increment(torch.from_numpy(xi), torch.eye(4, dtype=torch.float64)).float(),
                            len(problem.fields) - 1).numpy()
    assert np.all(losses[1:] > losses[0]), losses


def _tiny_segmenter(tmp_path):
    """A 1x1 convolution whose logits are the RGB channels: class = dominant colour (0 red, 1 green, 2 blue)."""
    model = torch.nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[:, :, None, None])
    path = tmp_path / "seg.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 24, 32), str(path), input_names=["image"], output_names=["logits"],
                      dynamo=False)
    return path


def test_onnx_segmentation_hook(tmp_path):
    path = _tiny_segmenter(tmp_path)
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, :80, 0] = 255                                   # left: red
    image[:, 80:, 2] = 255                                   # right: blue
    provider = OnnxSegmentationProvider(path, class_map={0: 7, 2: GROUND}, mean=(0, 0, 0), std=(1, 1, 1))
    labels = provider(CameraView("CAM", (160, 90), np.eye(3), np.eye(4), image))
    assert labels.shape == (90, 160)
    assert (labels[:, :70] == 7).all() and (labels[:, 90:] == GROUND).all()
    identity = OnnxSegmentationProvider(path, mean=(0, 0, 0), std=(1, 1, 1))
    assert (identity.labels(image)[:, 90:] == 2).all()


def test_onnx_hook_bad_input(tmp_path):
    with pytest.raises(UserError, match="not found"):
        OnnxSegmentationProvider(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load"):
        OnnxSegmentationProvider(tmp_path / "junk.onnx")
    provider = OnnxSegmentationProvider(_tiny_segmenter(tmp_path))
    with pytest.raises(ValueError, match="RGB image"):
        provider.labels(np.zeros((10, 10), np.uint8))


def test_box_provider_without_boxes_or_ground_gives_unlabeled_points():
    provider = BoxLabelProvider(use_ground=False)
    view = CameraView("CAM", (64, 48), np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]), np.eye(4))
    frame = provider.frame(np.random.default_rng(0).normal(size=(100, 3)), np.zeros((0, 7)), [], [view])
    assert (frame.point_labels == -1).all() and (frame.cameras["CAM"].labels == -1).all()


def test_amodal_regions_keep_points_seen_through_a_nearer_hull(real):
    """A box hull is larger than a pedestrian: the LiDAR sees the ground and objects behind it through the
    gaps. With exclusive labels those points land on the nearer hull at the true extrinsics; each class's
    amodal region (labels == c or extra_masks[c]) still contains them."""
    record, frame = real
    exclusive = sample_semantic_frame(record, BoxLabelProvider(instance_labels=True, amodal=False))
    static = record.static_extrinsics()
    misplaced = {True: 0, False: 0}
    for amodal, fr in ((True, frame), (False, exclusive)):
        for name, cam in fr.cameras.items():
            keep = fr.point_labels >= 0
            pts = fr.points[keep].astype(np.float64) @ cam.lidar_motion[:3, :3].T + cam.lidar_motion[:3, 3]
            T, K = static[name], cam.intrinsic
            c = pts @ T[:3, :3].T + T[:3, 3]
            front_of = c[:, 2] > 1
            uv = np.round(c[front_of, :2] / c[front_of, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]).astype(int)
            ok = (uv[:, 0] >= 0) & (uv[:, 0] < 1600) & (uv[:, 1] >= 0) & (uv[:, 1] < 900)
            labels = fr.point_labels[keep][front_of][ok]
            for label in np.unique(labels):
                at = uv[ok][labels == label]
                misplaced[amodal] += int((~cam.class_mask(int(label))[at[:, 1], at[:, 0]]).sum())
    assert misplaced[False] > 100
    assert misplaced[True] < 0.2 * misplaced[False]
