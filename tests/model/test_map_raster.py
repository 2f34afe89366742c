"""The map head's LiDAR ground raster (model/map_raster.py) and the refinement that uses it: cells are
indexed like the map grid, ground statistics see the paint under a car, bad points are ignored, the
refinement starts as a no-op, and fine-tuning can add it to a trained model with the trunk frozen."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.model.bevfusion import BEVFusion
from bevfusion_ros.model.checkpoint import load_into, read_checkpoint, save_checkpoint
from bevfusion_ros.model.config import load_config, validate
from bevfusion_ros.model.map_raster import RASTER_CHANNELS, LidarMapRaster
from bevfusion_ros.train import freeze_except

from model_helpers import TINY

CH = {name: i for i, name in enumerate(RASTER_CHANNELS)}


def raster_of(points: list[list[float]]) -> torch.Tensor:
    grid = LidarMapRaster([-50.0, 50.0, 0.5], [-50.0, 50.0, 0.5], (-5.0, 3.0))
    return grid([torch.tensor(points, dtype=torch.float32).reshape(-1, 5)])[0]


def raster_config(refine_channels: int = 16, refine_context: int = 0):
    """The tiny config with the raster refinement (and by default without its context branch)."""
    config = load_config(TINY)
    config.map = dataclasses.replace(config.map, lidar_raster=True, refine_channels=refine_channels,
                                     refine_context=refine_context)
    return config


def plain_config():
    """The tiny config as it was before the raster (what the earlier checkpoints were trained with)."""
    config = load_config(TINY)
    config.map = dataclasses.replace(config.map, lidar_raster=False, refine_channels=16, refine_context=0)
    return config


def test_cells_are_indexed_like_the_map_grid_x_first():
    r = raster_of([[10.2, -3.1, -1.8, 7.0, 0.0]])
    assert r.shape == (len(RASTER_CHANNELS), 200, 200)
    occupied = torch.nonzero(r[CH["occupied"]]).tolist()
    assert occupied == [[120, 93]]     # x = 10.2 -> (10.2 + 50) / 0.5 = 120.4; y = -3.1 -> 93.8


def test_ground_statistics_see_the_paint_under_a_car():
    # one cell: paint on the ground (intensity 80, 90) and a car body 1.2 m above it (intensity 10)
    pts = [[1.1, 1.1, -1.84, 80.0, 0.0], [1.2, 1.2, -1.83, 90.0, 0.0],
           [1.3, 1.1, -0.64, 10.0, 0.0], [1.1, 1.3, -0.60, 10.0, 0.0]]
    r = raster_of(pts)[:, 102, 102]
    assert r[CH["ground_intensity_mean"]] == pytest.approx(85.0 / 64.0)
    assert r[CH["ground_intensity_max"]] == pytest.approx(90.0 / 64.0)
    assert r[CH["ground_height"]] == pytest.approx(0.0, abs=1e-5)
    assert r[CH["height_span"]] == pytest.approx((1.84 - 0.60) / 2.0, abs=1e-5)
    assert r[CH["log_count"]] == pytest.approx(float(torch.log1p(torch.tensor(4.0))) / 4.0)


def test_points_off_the_grid_out_of_the_z_range_or_not_finite_are_ignored():
    nan = float("nan")
    bad = [[60.0, 0.0, -1.8, 9.0, 0.0], [0.0, -50.1, -1.8, 9.0, 0.0], [0.0, 0.0, -6.0, 9.0, 0.0],
           [0.0, 0.0, 3.5, 9.0, 0.0], [nan, 0.0, -1.8, 9.0, 0.0], [0.0, 0.0, nan, 9.0, 0.0],
           [0.0, 0.0, -1.8, float("inf"), 0.0]]
    assert raster_of(bad).abs().sum() == 0
    assert raster_of([]).abs().sum() == 0
    with pytest.raises(ValueError, match="x, y, z, intensity"):
        LidarMapRaster([-50.0, 50.0, 0.5], [-50.0, 50.0, 0.5], (-5.0, 3.0))([torch.zeros(4, 3)])


def test_refinement_starts_as_a_no_op_and_needs_the_raster():
    config = raster_config()
    model = BEVFusion(config).eval()
    x = torch.randn(1, model.decoder.out_channels, *config.bev_size)
    raster = model.map_raster([torch.randn(5000, 5) * torch.tensor([20.0, 20.0, 1.0, 30.0, 0.1])])
    head = model.map_head
    with torch.inference_mode():
        refined = head(x, raster)
        plain = head._resample(head.classifier(x))
    assert torch.equal(refined, plain)
    with pytest.raises(ValueError, match="LiDAR raster"):
        head(x)


def test_raster_needs_lidar_in_the_config():
    config = raster_config()
    config.modality = "camera"
    with pytest.raises(UserError, match="lidar_raster needs LiDAR"):
        validate(config)


def test_a_trained_model_gains_the_refinement_by_partial_init_with_the_trunk_frozen(tmp_path):
    trained = BEVFusion(plain_config())
    save_checkpoint(tmp_path / "plain.pt", trained, plain_config())
    config = raster_config()
    model = BEVFusion(config)
    with pytest.raises(UserError, match="different model config"):
        load_into(model, read_checkpoint(tmp_path / "plain.pt"), config)
    fresh = load_into(model, read_checkpoint(tmp_path / "plain.pt"), config, allow_missing=True)
    assert fresh and all(name.startswith("map_head.refine.") for name in fresh)
    own = model.state_dict()
    assert all(torch.equal(own[name], value) for name, value in trained.state_dict().items())
    # a checkpoint tensor the model lacks, or of another shape, is still an error
    wider = raster_config(refine_channels=8)
    save_checkpoint(tmp_path / "wide.pt", BEVFusion(wider), wider)
    with pytest.raises(UserError, match="shape mismatch"):
        load_into(model, read_checkpoint(tmp_path / "wide.pt"), config, allow_missing=True)

    frozen_bn = freeze_except(model, ["map_head"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("map_head.") for n in trainable)
    assert frozen_bn and not any(m is b for b in frozen_bn for m in model.map_head.modules())
    with pytest.raises(UserError, match="no module named"):
        freeze_except(model, ["not_a_module"])


def test_a_checkpoint_from_before_the_raster_existed_still_loads(tmp_path):
    config = plain_config()
    save_checkpoint(tmp_path / "old.pt", BEVFusion(config), config)
    payload = read_checkpoint(tmp_path / "old.pt")
    for key in ("lidar_raster", "refine_channels", "refine_context"):    # keys a checkpoint of an older version lacks
        del payload["config"]["map"][key]
    assert load_into(BEVFusion(config), payload, config) == []
    with pytest.raises(UserError, match="differs in map.lidar_raster"):
        load_into(BEVFusion(raster_config()), payload, raster_config())


def test_model_info_lists_the_raster_input():
    from bevfusion_ros.model.info import describe
    assert describe(raster_config())["shapes"]["map_raster"] == ["B", len(RASTER_CHANNELS), 200, 200]
    assert "map_raster" not in describe(plain_config())["shapes"]


def test_init_partial_without_a_checkpoint_is_a_one_line_error(capsys):
    from bevfusion_ros.cli import main as cli_main
    assert cli_main(["train", "--config", str(TINY), "--dataroot", "unused", "--init-partial"]) == 2
    assert "--init-partial needs --init" in capsys.readouterr().err


def context_config(channels: int = 4):
    return raster_config(refine_channels=8, refine_context=channels)


def test_the_context_branch_starts_as_a_no_op_and_can_be_added_to_a_trained_head(tmp_path):
    trained = BEVFusion(raster_config(refine_channels=8)).eval()
    save_checkpoint(tmp_path / "raster.pt", trained, raster_config(refine_channels=8))
    config = context_config()
    model = BEVFusion(config).eval()
    fresh = load_into(model, read_checkpoint(tmp_path / "raster.pt"), config, allow_missing=True)
    assert fresh and all(name.startswith("map_head.context.") for name in fresh)
    x = torch.randn(1, model.map_head.classifier[0][0].in_channels, 90, 90)
    raster = model.map_raster([torch.randn(5000, 5) * torch.tensor([20.0, 20.0, 1.0, 30.0, 0.1])])
    with torch.inference_mode():
        assert torch.equal(model.map_head(x, raster), trained.map_head(x, raster))


def test_the_context_branch_reaches_tens_of_metres():
    # one raster cell changed at the grid centre moves the refined logits more than 12.5 m (25 cells) away
    # with the context branch; the 0.5 m refinement alone reaches 3.5 m (7 cells)
    def reach(config) -> tuple[int, int]:
        torch.manual_seed(0)
        model = BEVFusion(config).eval()
        for module in model.map_head.modules():     # random weights everywhere (the zero inits carry nothing)
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, std=0.3)
        x = torch.zeros(1, model.map_head.classifier[0][0].in_channels, 90, 90)
        raster = torch.zeros(1, len(RASTER_CHANNELS), 200, 200)
        with torch.inference_mode():
            base = model.map_head(x, raster)
            raster[0, CH["ground_intensity_max"], 100, 100] = 3.0
            moved = torch.nonzero((model.map_head(x, raster) - base).abs().amax(1)[0] > 1e-6)
        return int((100 - moved[:, 0]).max()), int((moved[:, 0] - 100).max())

    assert reach(raster_config(refine_channels=8)) == (7, 7)
    behind, ahead = reach(context_config())
    assert behind > 25 and ahead > 25


def test_map_config_checks_context_and_class_weights():
    config = context_config()
    config.map = dataclasses.replace(config.map, refine_context=-1)
    with pytest.raises(UserError, match="refine_context"):
        validate(config)
    config.map = dataclasses.replace(config.map, refine_context=4, class_weights=[1.0, 2.0])
    with pytest.raises(UserError, match="class_weights needs one finite number"):
        validate(config)
    config.map = dataclasses.replace(config.map, class_weights=[1.0] * 5 + [float("nan")])
    with pytest.raises(UserError, match="class_weights"):
        validate(config)
    config.map = dataclasses.replace(config.map, class_weights=[1.0, 2.0, 1.0, 8.0, 1.0, 1.0])
    validate(config)
