"""ONNX export (checker, names, manifest) and the onnxruntime back-end against torch (max abs diff 1e-3)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from bevfusion_ros.errors import UserError
from bevfusion_ros.runtime import export
from bevfusion_ros.runtime.backend import make_backend

from .conftest import ToyBEVFusion, toy_config, toy_inputs  # noqa: E402  (importlib mode: relative import)


def test_toy_export_manifest_and_checker(toy_model, tmp_path):
    man = export.export_model(toy_model, toy_model.config, tmp_path, checkpoint_sha256="abc")
    assert (tmp_path / export.MANIFEST).is_file()
    assert json.loads((tmp_path / export.MANIFEST).read_text()) == man
    assert man["opset"] == export.DEFAULT_OPSET and man["checkpoint_sha256"] == "abc"
    assert set(man["tensor_contract"]) == {"camera_encoder", "bev_head", "outside_engines"}
    cam = man["parts"]["camera_encoder"]
    assert [i["name"] for i in cam["inputs"]] == ["images", "lidar_depth"]
    assert cam["inputs"][0]["shape"] == [1, 2, 3, 16, 24] and cam["inputs"][0]["dtype"] == "float32"
    assert [o["name"] for o in cam["outputs"]] == ["depth_probs", "cam_feats"]
    assert cam["outputs"][0]["shape"] == [1, 2, 4, 8, 12]
    head = man["parts"]["bev_head"]
    assert [i["name"] for i in head["inputs"]] == ["lidar_bev", "camera_bev"]
    assert [o["name"] for o in head["outputs"]] == ["heatmap", "reg", "map"]
    for part in man["parts"].values():
        onnx.checker.check_model(str(tmp_path / part["file"]), full_check=True)
        assert part["verification"]["passed"] and max(part["verification"]["max_abs_diff"].values()) < 1e-4
    assert export.load_manifest(tmp_path)["parts"].keys() == {"camera_encoder", "bev_head"}


def test_export_modalities(tmp_path):
    lidar = ToyBEVFusion(toy_config("lidar")).eval()
    man = export.export_model(lidar, lidar.config, tmp_path / "l", verify=False)
    assert set(man["parts"]) == {"bev_head"}
    assert [i["name"] for i in man["parts"]["bev_head"]["inputs"]] == ["lidar_bev"]
    cam = ToyBEVFusion(toy_config("camera", lidar_depth=False)).eval()
    man = export.export_model(cam, cam.config, tmp_path / "c", verify=False)
    assert [i["name"] for i in man["parts"]["camera_encoder"]["inputs"]] == ["images"]
    assert [i["name"] for i in man["parts"]["bev_head"]["inputs"]] == ["camera_bev"]
    # an export made for another modality is refused by the back-end
    with pytest.raises(UserError, match="does not match config"):
        make_backend("onnxruntime", ToyBEVFusion(toy_config("fusion")).eval(), onnx_dir=tmp_path / "c")


@pytest.mark.parametrize("io_binding", [True, False])
def test_onnxruntime_backend_matches_torch(toy_model, tmp_path, io_binding):
    ort_backend = make_backend("onnxruntime", toy_model, cache_dir=tmp_path, intra_op_threads=2, io_binding=io_binding)
    ref = make_backend("torch", toy_model)
    assert ort_backend.name == "onnxruntime"
    x = toy_inputs(toy_model)
    for depth in (x["lidar_depth"], None):      # None: fed as zeros, as the torch model does
        got = ort_backend.run_camera_encoder(x["images"], depth)
        want = ref.run_camera_encoder(x["images"], depth)
        for g, w in zip(got, want):
            assert isinstance(g, torch.Tensor) and g.shape == w.shape and g.dtype == torch.float32
            assert (g - w).abs().max().item() <= 1e-3
    got = ort_backend.run_bev_head(x["lidar_bev"], x["camera_bev"])
    want = ref.run_bev_head(x["lidar_bev"], x["camera_bev"])
    assert list(got) == list(toy_model.output_names)
    for name in want:
        assert (got[name] - want[name]).abs().max().item() <= 1e-3
    # outputs are fresh tensors, not buffers overwritten by the next call
    again = ort_backend.run_bev_head(x["lidar_bev"] * 0, x["camera_bev"] * 0)
    assert not torch.equal(again["heatmap"], got["heatmap"])


def test_onnxruntime_on_demand_export_is_cached(toy_model, tmp_path):
    a = make_backend("onnxruntime", toy_model, cache_dir=tmp_path)
    b = make_backend("onnxruntime", toy_model, cache_dir=tmp_path)
    assert a.onnx_dir == b.onnx_dir and len(list(tmp_path.iterdir())) == 1
    with torch.no_grad():
        toy_model.heat.bias += 1.0                   # new weights -> new export
    c = make_backend("onnxruntime", toy_model, cache_dir=tmp_path)
    assert c.onnx_dir != a.onnx_dir


def test_onnxruntime_bad_inputs(toy_model, tmp_path):
    backend = make_backend("onnxruntime", toy_model, cache_dir=tmp_path)
    x = toy_inputs(toy_model)
    with pytest.raises(ValueError, match="expects"):
        backend.run_camera_encoder(x["images"][:, :1], None)
    with pytest.raises(ValueError, match="expects"):
        backend.run_bev_head(x["lidar_bev"][..., :5], x["camera_bev"])
    with pytest.raises(UserError, match="unknown back-end"):
        make_backend("tensorrtx", toy_model)
    with pytest.raises(UserError, match="manifest.json not found|not found"):
        make_backend("onnxruntime", toy_model, onnx_dir=tmp_path / "nowhere")


def test_export_cli_on_real_tiny_model_and_parity(tmp_path, capsys):
    """`bevfusion-ros export` on the real network (bevfusion-tiny, random weights with realistic BN
    statistics, saved as a checkpoint): both parts pass onnx.checker, the manifest records the checkpoint
    hash, and the onnxruntime back-end over that folder matches torch within 1e-3 on every output."""
    pytest.importorskip("bevfusion_ros.model.bevfusion")
    from bevfusion_ros.cli import main as cli_main
    from bevfusion_ros.model.bevfusion import build_model
    from bevfusion_ros.model.checkpoint import save_checkpoint
    from bevfusion_ros.model.config import load_config
    from bevfusion_ros.paths import REPO_ROOT
    torch.manual_seed(0)
    config = load_config(REPO_ROOT / "models" / "bevfusion-tiny.yaml")
    config.map = dataclasses.replace(config.map, lidar_raster=True)   # the map head's third input, exported too
    cfg_path = tmp_path / "tiny.yaml"
    config.save(cfg_path)
    model = build_model(config)
    for m in model.modules():   # realistic BN statistics instead of the identity of a fresh model
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.map_head.refine[-1].weight, std=0.1)   # zero at init: make it count
    assert model.map_head.context is not None                          # the tiny config's context branch
    torch.nn.init.normal_(model.map_head.context.out.weight, std=0.1)  # (bilinear resizes in the graph)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model, config)
    out = tmp_path / "onnx"
    rc = cli_main(["export", "--config", str(cfg_path), "--checkpoint", str(ckpt), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    man = export.load_manifest(out)
    assert man["checkpoint_sha256"] == export.sha256_file(ckpt) and man["config_name"] == "bevfusion-tiny"
    assert set(man["parts"]) == {"camera_encoder", "bev_head"}
    for part, entry in man["parts"].items():
        onnx.checker.check_model(str(out / entry["file"]), full_check=True)
        diffs = entry["verification"]["max_abs_diff"]
        assert entry["verification"]["passed"] and max(diffs.values()) <= 1e-3, (part, diffs)
    model, config, _ = export.load_model(cfg_path, ckpt)
    assert [o["name"] for o in man["parts"]["bev_head"]["outputs"]] == list(model.output_names)
    backend = make_backend("onnxruntime", model, onnx_dir=out)
    ref = make_backend("torch", model)
    specs = export.part_specs(model, config)
    x = export.example_inputs({**specs["camera_encoder"]["inputs"], **specs["bev_head"]["inputs"]}, seed=3)
    for g, w in zip(backend.run_camera_encoder(x["images"], x["lidar_depth"]),
                    ref.run_camera_encoder(x["images"], x["lidar_depth"])):
        assert (g - w).abs().max().item() <= 1e-3
    assert [i["name"] for i in man["parts"]["bev_head"]["inputs"]] == ["lidar_bev", "camera_bev", "map_raster"]
    bev_inputs = (x["lidar_bev"], x["camera_bev"], x["map_raster"])
    got, want = backend.run_bev_head(*bev_inputs), ref.run_bev_head(*bev_inputs)
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-3
    assert (ref.run_bev_head(x["lidar_bev"], x["camera_bev"], x["map_raster"] * 0)["map"] - want["map"]).abs().max() > 1e-2
    # bad CLI input: one line, exit status 2
    assert cli_main(["export", "--config", str(cfg_path), "--checkpoint", str(tmp_path / "no.pt"),
                     "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_load_model_errors(tmp_path):
    pytest.importorskip("bevfusion_ros.model.bevfusion")
    from bevfusion_ros.paths import REPO_ROOT
    cfg = REPO_ROOT / "models" / "bevfusion-tiny.yaml"
    with pytest.raises(UserError, match="not found"):
        export.load_model(cfg, tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        export.load_model(cfg, bad)
    with pytest.raises(UserError, match="config .* not found"):
        export.load_model(tmp_path / "nope.yaml", bad)
    with pytest.raises(UserError, match="checkpoint is required"):
        export.load_model(cfg, None)
