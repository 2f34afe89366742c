"""Shapes of both configs: the tiny model runs a full forward; the nuScenes model is checked through
model-info (geometry-derived shapes and parameter counts; a full forward is too slow for a unit test on
CPU) plus a forward of its dense BEV head with the real channel counts on a reduced 24x24 grid (the head is
fully convolutional, so only the spatial size differs from the real 180x180)."""
from __future__ import annotations

import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.model.bevfusion import BEVFusion
from bevfusion_ros.model.config import load_config
from bevfusion_ros.model.info import describe
from bevfusion_ros.model.preprocess import Preprocessor

from model_helpers import NUSCENES, TINY, make_frame


def test_tiny_full_forward_has_documented_shapes():
    config = load_config(TINY)
    model = BEVFusion(config).eval()
    inputs = Preprocessor(config)(make_frame(3000))
    with torch.inference_mode():
        out = model(inputs)
    bx, by = config.bev_size
    assert tuple(out["heatmap"].shape) == (1, 10, bx, by)
    for name, channels in (("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2), ("attr", 8)):
        assert tuple(out[name].shape) == (1, channels, bx, by)
    assert tuple(out["map"].shape) == (1, 6, 200, 200)
    assert list(out) == list(model.output_names)


def test_camera_encoder_contract_shapes():
    config = load_config(TINY)
    model = BEVFusion(config).eval()
    h, w = config.camera.image_size
    with torch.inference_mode():
        depth, feats = model.camera_encoder(torch.randn(2, 6, 3, h, w), torch.zeros(2, 6, 1, h, w))
    fh, fw = config.feature_size
    assert tuple(depth.shape) == (2, 6, config.depth_bins, fh, fw)
    assert tuple(feats.shape) == (2, 6, config.vtransform.out_channels, fh, fw)
    assert torch.allclose(depth.sum(2), torch.ones(2, 6, fh, fw), atol=1e-5)


def test_nuscenes_config_matches_paper_shapes():
    info = describe(load_config(NUSCENES))
    shapes = info["shapes"]
    assert shapes["voxel_grid (X, Y, Z)"] == [1440, 1440, 41]
    assert shapes["lidar_bev"] == ["B", 256, 180, 180]
    assert shapes["depth_probs"] == ["B", 6, 118, 32, 88]
    assert shapes["camera_bev_pooled"] == ["B", 80, 360, 360]
    assert shapes["fused_bev"] == ["B", 256, 180, 180]
    assert shapes["decoded_bev"] == ["B", 512, 180, 180]
    assert shapes["out.map"] == ["B", 6, 200, 200]
    assert info["parameters"]["total"] > 10_000_000


def test_nuscenes_bev_head_forward_with_paper_channels():
    config = load_config(NUSCENES)
    model = BEVFusion(config).eval()
    with torch.inference_mode():
        out = model.bev_head(torch.randn(1, 256, 24, 24), torch.randn(1, 80, 24, 24))
    named = dict(zip(model.output_names, out))
    assert tuple(named["heatmap"].shape) == (1, 10, 24, 24)
    assert tuple(named["attr"].shape) == (1, 8, 24, 24)
    assert tuple(named["map"].shape) == (1, 6, 200, 200)


@pytest.mark.parametrize("modality", ["lidar", "camera"])
def test_single_modality_switches_build_and_run(tmp_path, modality):
    text = TINY.read_text().replace("modality: fusion", f"modality: {modality}")
    if modality == "camera":    # the map head's LiDAR raster needs LiDAR: a camera-only config must say so
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match="lidar_raster needs LiDAR"):
            load_config(path)
        text = text.replace("lidar_raster: true", "lidar_raster: false")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    config = load_config(path)
    model = BEVFusion(config).eval()
    assert (model.fuser is None) and (hasattr(model, "lidar") == (modality == "lidar"))
    with torch.inference_mode():
        out = model(Preprocessor(config)(make_frame(2000)))
    assert out["heatmap"].shape[-2:] == torch.Size(config.bev_size)


def test_bad_config_values_are_user_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.read_text().replace("modality: fusion", "modality: radar"))
    with pytest.raises(UserError, match="modality"):
        load_config(path)
    path.write_text(TINY.read_text() + "\nunknown_key: 1\n")
    with pytest.raises(UserError, match="unknown key"):
        load_config(path)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    for broken, message in (("    enabled: true\n    bin_m: 0.0\n", "bin_m > 0"),
                            ("    enabled: true\n    min_correlation: 1.5\n", "min_correlation"),
                            ("    enabled: true\n    max_speed: .nan\n", "finite")):
        path.write_text(TINY.read_text().replace("    enabled: true\n", broken, 1))
        with pytest.raises(UserError, match=message):
            load_config(path)
    path.write_text(TINY.read_text().replace("heading_from_velocity: 1.0", "heading_from_velocity: -1.0"))
    with pytest.raises(UserError, match="heading_from_velocity"):
        load_config(path)
