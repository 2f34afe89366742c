"""Training machinery: targets, losses and one optimizer step on a tiny hand-built batch (no dataset, no
training run: a few steps on one sample, seconds)."""
from __future__ import annotations

import numpy as np
import torch

from bevfusion_ros.data import augment
from bevfusion_ros.model.bevfusion import BEVFusion
from bevfusion_ros.model.box_coder import BoxCoder
from bevfusion_ros.model.config import load_config
from bevfusion_ros.model.losses import compute_losses
from bevfusion_ros.model.postprocess import PostProcessor
from bevfusion_ros.model.preprocess import Preprocessor
from bevfusion_ros.model.targets import build_targets

from model_helpers import TINY, make_frame

BOXES = np.array([[10.0, 5.0, -1.0, 4.5, 1.9, 1.6, 0.3, 2.0, 0.0, ],
                  [-20.0, -8.0, -1.2, 0.7, 0.7, 1.8, 0.0, 0.0, 0.0],
                  [15.0, -12.0, -1.0, 10.0, 2.8, 3.2, -1.2, 0.0, 0.0]])
LABELS = np.array([0, 5, 2])
ATTRS = np.array([5, 3, 6])


def tiny_batch(config):
    inputs = Preprocessor(config)(make_frame(3000, seed=7))
    targets = build_targets(BOXES, LABELS, ATTRS, config)
    batch = dict(inputs)
    for key, value in targets.items():
        batch[key] = torch.from_numpy(value)[None]
    batch["map"] = torch.zeros(1, len(config.map.classes), *config.map_size)
    batch["map"][:, 0, 50:150, 80:120] = 1.0
    return batch


def test_targets_encode_and_decode_back_to_the_boxes():
    config = load_config(TINY)
    targets = build_targets(BOXES, LABELS, ATTRS, config)
    assert targets["mask"].sum() == 3
    coder = BoxCoder(config)
    size_y = config.bev_size[1]
    ind = torch.from_numpy(targets["ind"][:3])
    code = torch.from_numpy(targets["target"][:3])
    boxes = coder.decode(ind // size_y, ind % size_y, code[:, 0:2], code[:, 2:3], code[:, 3:6], code[:, 6:8],
                         code[:, 8:10]).numpy()
    np.testing.assert_allclose(boxes, BOXES, atol=1e-4)
    for k, label in enumerate(LABELS):  # the Gaussian peak is 1 exactly at the centre cell
        x, y = divmod(int(targets["ind"][k]), size_y)
        assert targets["heatmap"][label, x, y] == 1.0


def test_one_training_step_lowers_the_loss_on_a_tiny_batch():
    torch.set_num_threads(1)
    config = load_config(TINY)
    torch.manual_seed(0)
    model = BEVFusion(config).train()
    batch = tiny_batch(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = compute_losses(model(batch), batch, config)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    with torch.no_grad():
        final = float(compute_losses(model(batch), batch, config)["total"])
    assert final < losses[0], (losses, final)


def test_global_augmentation_keeps_points_inside_their_boxes():
    from bevfusion_ros.geometry import points_in_boxes
    config = load_config(TINY)
    rng = np.random.default_rng(3)
    local = np.random.default_rng(0).uniform(-0.4, 0.4, (50, 3)) * BOXES[0, 3:6]
    c, s = np.cos(BOXES[0, 6]), np.sin(BOXES[0, 6])
    xyz = local @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T + BOXES[0, :3]
    points = np.concatenate([xyz, np.zeros((50, 2))], 1)
    assert points_in_boxes(points, BOXES[:1]).all()
    for _ in range(5):
        A = augment.random_lidar_aug(config, rng)
        inside = points_in_boxes(augment.augment_points(points, A), augment.augment_boxes(BOXES[:1], A))
        assert inside.all()


def test_postprocess_recovers_a_perfect_heatmap():
    config = load_config(TINY)
    config.detection.heading_from_velocity = 0.0     # decoding alone (BOXES[0] moves off its axis)
    targets = build_targets(BOXES, LABELS, ATTRS, config)
    n = config.bev_size[0] * config.bev_size[1]
    outputs = {"heatmap": torch.logit(torch.from_numpy(targets["heatmap"]).clamp(1e-4, 1 - 1e-4))[None]}
    dense = torch.zeros(1, 10, n)
    ind = torch.from_numpy(targets["ind"][:3])
    dense[0, :, ind] = torch.from_numpy(targets["target"][:3]).T
    dense = dense.view(1, 10, *config.bev_size)
    for name, sl in (("reg", slice(0, 2)), ("height", slice(2, 3)), ("dim", slice(3, 6)), ("rot", slice(6, 8)),
                     ("vel", slice(8, 10))):
        outputs[name] = dense[:, sl]
    outputs["attr"] = torch.zeros(1, 8, *config.bev_size)
    det = PostProcessor(config, score_threshold=0.5).detections(outputs)
    assert len(det) == 3
    order = np.argsort(det.labels)
    np.testing.assert_allclose(det.boxes[order], BOXES[np.argsort(LABELS)], atol=1e-3)


def test_heading_from_velocity_points_moving_boxes_where_they_go():
    from bevfusion_ros.model.postprocess import align_heading_to_velocity
    #                 x  y  z  l  w  h  yaw        vx    vy
    boxes = np.array([[0, 0, 0, 4, 2, 1.5, 0.0, -5.0, 0.0],      # moving backwards, fast: turned
                      [0, 0, 0, 4, 2, 1.5, 1.4, 0.0, 3.0],       # a few degrees off its motion: aligned
                      [0, 0, 0, 4, 2, 1.5, 0.0, -0.3, 0.0],      # below the speed floor: kept
                      [0, 0, 0, 4, 2, 1.5, 3.0, 0.0, 0.0]],      # static: kept
                     np.float32)
    out = boxes.copy()
    align_heading_to_velocity(out, 1.0)
    np.testing.assert_allclose(out[:, 6], [np.pi, np.pi / 2, 0.0, 3.0], atol=1e-6)
    np.testing.assert_array_equal(np.delete(out, 6, 1), np.delete(boxes, 6, 1))
    off = boxes.copy()
    align_heading_to_velocity(off, 0.0)
    np.testing.assert_array_equal(off, boxes)


def test_map_class_weights_scale_each_class_share_of_the_focal_loss():
    from bevfusion_ros.model.losses import sigmoid_focal_loss
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.8).float()
    per_class = [sigmoid_focal_loss(logits[:, c:c + 1], target[:, c:c + 1], -1.0, 2.0) for c in range(3)]
    weighted = sigmoid_focal_loss(logits, target, -1.0, 2.0, [1.0, 0.0, 5.0])
    assert torch.allclose(weighted, (per_class[0] + 5.0 * per_class[2]) / 3)
    assert torch.equal(sigmoid_focal_loss(logits, target, -1.0, 2.0), sigmoid_focal_loss(logits, target, -1.0, 2.0, []))
