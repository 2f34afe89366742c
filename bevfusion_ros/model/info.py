"""`bevfusion-ros model-info CONFIG`: shapes and parameter counts of a model config (no forward pass:
shapes come from the config's geometry, so the full nuScenes model is described instantly)."""
from __future__ import annotations

import argparse
import json

from bevfusion_ros.model.bevfusion import BEVFusion, count_parameters
from bevfusion_ros.model.config import ModelConfig, load_config


def describe(config: ModelConfig) -> dict:
    model = BEVFusion(config)
    cfg = config
    h, w = cfg.camera.image_size
    fh, fw = cfg.feature_size
    bx, by = cfg.bev_size
    n = cfg.num_cameras
    shapes: dict[str, list] = {}
    params: dict[str, int] = {}
    if cfg.use_lidar:
        shapes["points"] = ["P", cfg.lidar.in_channels]
        shapes["voxel_grid (X, Y, Z)"] = list(cfg.sparse_shape)
        shapes["lidar_bev"] = ["B", model.lidar.out_channels, model.lidar.out_x, model.lidar.out_y]
        if model.uses_map_raster:
            shapes["map_raster"] = ["B", model.map_raster.channels, model.map_raster.nx, model.map_raster.ny]
        params["lidar_encoder"] = count_parameters(model.lidar)
    if cfg.use_camera:
        shapes["images"] = ["B", n, 3, h, w]
        if cfg.vtransform.lidar_depth:
            shapes["lidar_depth"] = ["B", n, 1, h, w]
        shapes["depth_probs"] = ["B", n, cfg.depth_bins, fh, fw]
        shapes["cam_feats"] = ["B", n, cfg.vtransform.out_channels, fh, fw]
        px, py = cfg.camera_pool_size
        shapes["camera_bev_pooled"] = ["B", cfg.vtransform.out_channels * cfg.camera_z_bins, px, py]
        shapes["camera_bev"] = ["B", cfg.vtransform.out_channels, bx, by]
        params["image_encoder"] = count_parameters(model.image_encoder)
        params["depth_net"] = count_parameters(model.depth_net)
        params["view_transform"] = count_parameters(model.vtransform)
    if model.fuser is not None:
        shapes["fused_bev"] = ["B", cfg.fuser_channels, bx, by]
        params["fuser"] = count_parameters(model.fuser)
    shapes["decoded_bev"] = ["B", model.decoder.out_channels, bx, by]
    params["decoder"] = count_parameters(model.decoder)
    n_cls, n_attr = len(cfg.detection_classes), len(cfg.attributes)
    head_channels = {"heatmap": n_cls, "reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2, "attr": n_attr}
    for name in model.output_names:
        if name == "map":
            shapes["out.map"] = ["B", len(cfg.map.classes), *cfg.map_size]
        else:
            shapes[f"out.{name}"] = ["B", head_channels[name], bx, by]
    if model.det_head is not None:
        params["detection_head"] = count_parameters(model.det_head)
    if model.map_head is not None:
        params["map_head"] = count_parameters(model.map_head)
    params["total"] = count_parameters(model)
    return {"name": cfg.name, "modality": cfg.modality, "bev_cell_m": list(cfg.bev_cell), "shapes": shapes,
            "parameters": params, "output_names": list(model.output_names)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model YAML (e.g. models/bevfusion-tiny.yaml)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    info = describe(load_config(args.config))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']} ({info['modality']}), BEV cell {info['bev_cell_m'][0]:.3f} m")
    print("shapes:")
    for key, shape in info["shapes"].items():
        print(f"  {key:<24} [{', '.join(str(s) for s in shape)}]")
    print("parameters:")
    for key, count in info["parameters"].items():
        print(f"  {key:<24} {count:>12,}")
    return 0
