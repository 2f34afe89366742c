"""`bevfusion-ros export`: the dense model parts -> ONNX, checked, with a manifest.

Two graphs, with the tensor-only signatures of the model's exportable parts (models/README.md, "Tensor
contract"):

- ``camera_encoder.onnx``: ``images [B,N,3,H,W]`` (+ ``lidar_depth [B,N,1,H,W]`` when the config uses
  DepthLSS) -> ``depth_probs [B,N,D,h,w]``, ``cam_feats [B,N,C,h,w]``;
- ``bev_head.onnx``: ``lidar_bev [B,Cl,X,Y]`` and/or ``camera_bev [B,Cc,X,Y]`` (the modalities the config
  uses), plus ``map_raster [B,6,Xm,Ym]`` with ``map.lidar_raster`` -> the raw head tensors named
  ``model.output_names`` (heatmap, reg, height, dim, rot, vel, attr, map).

Voxelization, the sparse encoder (sparse_conv) and bev_pool stay in torch beside the engines. Shapes are
static (batch 1 by default): TensorRT builds its fastest kernels for fixed shapes and every frame has the
same camera count and grids (a masked camera is a zero image, not a missing one).

Every file is checked with ``onnx.checker.check_model(full_check=True)`` and, unless ``--no-verify``,
run with onnxruntime against torch on random inputs (max abs diff recorded in the manifest, required
<= 1e-3). ``manifest.json`` records the contract, input/output names, shapes and dtypes, the source
checkpoint's SHA-256, opset, torch/onnx versions and each ONNX file's SHA-256.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bevfusion_ros.errors import UserError

DEFAULT_OPSET = 17
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "bevfusion_ros/onnx-export-v1"
TOLERANCE = 1e-3
PARTS = ("camera_encoder", "bev_head")

TENSOR_CONTRACT = {
    "camera_encoder": "images [B,N,3,H,W] float32 (normalized, resized/cropped as the config) + optional "
                      "lidar_depth [B,N,1,H,W] float32 (metres, 0 = no return) -> depth_probs [B,N,D,h,w] "
                      "(softmax over D depth bins), cam_feats [B,N,C,h,w]",
    "outside_engines": "torch, every back-end: voxelization + SparseEncoder (sparse_conv) -> lidar_bev "
                       "[B,Cl,X,Y]; LiDAR ground raster on the map grid -> map_raster [B,6,Xm,Ym] (only with "
                       "map.lidar_raster); camera mask applied to cam_feats, then bev_pool (depth_probs x cam_feats "
                       "-> camera_bev [B,Cc,X,Y]) + BEV downsample; post-processing (heatmap peaks, box "
                       "decoding, NMS, map sigmoid)",
    "bev_head": "lidar_bev [B,Cl,X,Y] and/or camera_bev [B,Cc,X,Y] (+ map_raster [B,6,Xm,Ym] with "
                "map.lidar_raster) -> raw head tensors in output order "
                "(ConvFuser + SECOND/SECONDFPN + heads); X is LiDAR x, Y is LiDAR y",
}


# ----------------------------------------------------------------------------- model loading


def load_model(config_path: str | Path, checkpoint_path: str | Path | None, device: str = "cpu",
               allow_untrained: bool = False):
    """(model in eval mode, config, checkpoint sha256 or None). A missing/corrupt/mismatched checkpoint is a
    UserError; ``checkpoint_path=None`` needs ``allow_untrained`` (random weights, for tests)."""
    from bevfusion_ros.model.bevfusion import build_model
    from bevfusion_ros.model.config import load_config

    config_path = Path(config_path)
    if not config_path.is_file():
        raise UserError(f"config {config_path} not found")
    config = load_config(config_path)
    model = build_model(config)
    digest = None
    if checkpoint_path is not None:
        from bevfusion_ros.model.checkpoint import load_into, read_checkpoint
        payload = read_checkpoint(checkpoint_path)
        load_into(model, payload, config, source=f"checkpoint {checkpoint_path}")
        digest = sha256_file(checkpoint_path)
    elif not allow_untrained:
        raise UserError("a checkpoint is required (--checkpoint)")
    return model.to(device).eval(), config, digest


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- export wrappers


class CameraEncoderExport(nn.Module):
    """``model.camera_encoder`` with a fixed positional signature (lidar_depth optional by config)."""

    def __init__(self, model: nn.Module, with_lidar_depth: bool):
        super().__init__()
        self.model = model
        self.with_lidar_depth = with_lidar_depth

    def forward(self, images: torch.Tensor, lidar_depth: torch.Tensor | None = None):
        return self.model.camera_encoder(images, lidar_depth if self.with_lidar_depth else None)


class BEVHeadExport(nn.Module):
    """``model.bev_head`` taking only the BEV inputs the config uses, in ``input_names`` order."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor):
        named = dict(zip(self.input_names, inputs))
        out = self.model.bev_head(named.get("lidar_bev"), named.get("camera_bev"), named.get("map_raster"))
        if isinstance(out, dict):
            out = tuple(out[name] for name in self.model.output_names)
        return tuple(out)


def part_specs(model: nn.Module, config, batch: int = 1) -> dict[str, dict]:
    """Input names/shapes of each exportable part of this model (parts the config lacks are left out)."""
    specs: dict[str, dict] = {}
    bev_x, bev_y = config.bev_size
    if config.use_camera:
        h, w = config.camera.image_size
        n = config.num_cameras
        inputs = {"images": (batch, n, 3, h, w)}
        if config.vtransform.lidar_depth:
            inputs["lidar_depth"] = (batch, n, 1, h, w)
        specs["camera_encoder"] = {"inputs": inputs, "outputs": ("depth_probs", "cam_feats")}
    inputs = {}
    if config.use_lidar:
        inputs["lidar_bev"] = (batch, int(model.lidar_channels), bev_x, bev_y)
    if config.use_camera:
        inputs["camera_bev"] = (batch, int(model.camera_channels), bev_x, bev_y)
    if getattr(model, "uses_map_raster", False):
        raster = model.map_raster
        inputs["map_raster"] = (batch, raster.channels, raster.nx, raster.ny)
    specs["bev_head"] = {"inputs": inputs, "outputs": tuple(model.output_names)}
    return specs


def example_inputs(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible random inputs: normalized images, sparse positive LiDAR depth, ReLU-like BEV features."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name == "lidar_depth":
            depth = torch.rand(shape, generator=gen) * 60.0
            out[name] = depth * (torch.rand(shape, generator=gen) < 0.05)
        elif name == "images":
            out[name] = torch.randn(shape, generator=gen)
        else:
            out[name] = torch.randn(shape, generator=gen).clamp_min(0)
    return out


def wrapper_for(model: nn.Module, part: str, input_names: Sequence[str]) -> nn.Module:
    if part == "camera_encoder":
        return CameraEncoderExport(model, "lidar_depth" in input_names).eval()
    if part == "bev_head":
        return BEVHeadExport(model, input_names).eval()
    raise ValueError(f"unknown part {part!r}")


def export_onnx(module: nn.Module, inputs: dict[str, torch.Tensor], output_names: Sequence[str], path: str | Path,
                opset: int = DEFAULT_OPSET) -> Path:
    """torch -> ONNX with the TorchScript exporter (the dynamo exporter needs onnxscript, not installed),
    named inputs/outputs, constant folding, static shapes; then ``onnx.checker`` (full check)."""
    import onnx
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=False,
                              input_names=list(inputs), output_names=list(output_names), opset_version=int(opset),
                              do_constant_folding=True)
    check_onnx(path)
    # the exporter may rename outputs that alias inputs or each other; make sure the contract's names hold
    graph = onnx.load(str(path), load_external_data=False).graph
    got_in = [i.name for i in graph.input]
    got_out = [o.name for o in graph.output]
    if got_in != list(inputs) or got_out != list(output_names):
        raise RuntimeError(f"exported {path.name} has inputs {got_in} / outputs {got_out}, expected "
                           f"{list(inputs)} / {list(output_names)}")
    return path


def check_onnx(path: str | Path) -> None:
    import onnx
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise UserError(f"{path} fails onnx.checker: {str(err).splitlines()[0]}") from None


def _io_spec(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    model = onnx.load(str(path), load_external_data=False)

    def spec(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
                t.elem_type).name})
        return out
    return spec(model.graph.input), spec(model.graph.output)


def verify_with_onnxruntime(module: nn.Module, path: str | Path, inputs: dict[str, torch.Tensor],
                            output_names: Sequence[str], threads: int = 2) -> dict[str, float]:
    """Max abs difference per output between torch and onnxruntime (CPU) on ``inputs``."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = module(*inputs.values())
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = session.run(list(output_names), {k: v.detach().cpu().numpy() for k, v in inputs.items()})
    return {name: float(np.max(np.abs(r.detach().cpu().numpy() - g))) if g.size else 0.0
            for name, r, g in zip(output_names, ref, got)}


def export_model(model: nn.Module, config, out_dir: str | Path, opset: int = DEFAULT_OPSET, batch: int = 1,
                 verify: bool = True, checkpoint: str | Path | None = None, checkpoint_sha256: str | None = None,
                 config_path: str | Path | None = None, tolerance: float = TOLERANCE) -> dict:
    """Export every dense part of ``model`` to ``out_dir`` and write ``manifest.json``; returns it."""
    import onnx
    model = model.eval().cpu()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": MANIFEST_FORMAT, "created_unix": int(time.time()), "opset": int(opset),
        "torch": torch.__version__, "onnx": onnx.__version__, "config": str(config_path) if config_path else None,
        "config_name": config.name, "modality": config.modality, "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": checkpoint_sha256, "batch": int(batch), "tensor_contract": TENSOR_CONTRACT,
        "output_names": list(model.output_names), "parts": {},
    }
    for part, spec in part_specs(model, config, batch).items():
        inputs = example_inputs(spec["inputs"])
        wrapper = wrapper_for(model, part, list(spec["inputs"]))
        path = export_onnx(wrapper, inputs, spec["outputs"], out_dir / f"{part}.onnx", opset)
        ins, outs = _io_spec(path)
        entry = {"file": path.name, "sha256": sha256_file(path), "inputs": ins, "outputs": outs}
        if verify:
            diffs = verify_with_onnxruntime(wrapper, path, inputs, spec["outputs"])
            entry["verification"] = {"max_abs_diff": diffs, "tolerance": tolerance,
                                     "passed": bool(max(diffs.values()) <= tolerance)}
            if not entry["verification"]["passed"]:
                worst = max(diffs, key=diffs.get)
                raise UserError(f"{path.name}: onnxruntime differs from torch by {diffs[worst]:.3g} on "
                                f"{worst!r} (> {tolerance})")
        manifest["parts"][part] = entry
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(onnx_dir: str | Path) -> dict:
    """The manifest of an export folder, with every listed ONNX file present (UserError otherwise)."""
    onnx_dir = Path(onnx_dir)
    path = onnx_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: run `bevfusion-ros export --out {onnx_dir}` first")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{path} is not a bevfusion_ros export manifest")
    for part, entry in manifest.get("parts", {}).items():
        if not (onnx_dir / entry["file"]).is_file():
            raise UserError(f"{onnx_dir / entry['file']} ({part}) listed in the manifest is missing")
    return manifest


def check_manifest_matches(manifest: dict, model: nn.Module, config) -> None:
    """UserError when an export folder was made for another architecture/modality than ``model``."""
    specs = part_specs(model, config, int(manifest.get("batch", 1)))
    for part, spec in specs.items():
        entry = manifest["parts"].get(part)
        if entry is None:
            raise UserError(f"the ONNX export has no {part} part, but config {config.name!r} needs one")
        want = {k: list(v) for k, v in spec["inputs"].items()}
        have = {i["name"]: list(i["shape"]) for i in entry["inputs"]}
        outs = [o["name"] for o in entry["outputs"]]
        if want != have or outs != list(spec["outputs"]):
            raise UserError(f"the ONNX export's {part} ({have} -> {outs}) does not match config "
                            f"{config.name!r} ({want} -> {list(spec['outputs'])}); re-export")


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="model config YAML (models/bevfusion-*.yaml)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.pt) to export")
    parser.add_argument("--out", required=True, help="output folder for the ONNX files + manifest.json")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--batch", type=int, default=1, help="static batch size of the graphs (default 1)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")


def run(args: argparse.Namespace) -> int:
    if args.opset < 16:
        raise UserError(f"--opset {args.opset} is too old: the map head needs GridSample (opset >= 16)")
    if args.batch < 1:
        raise UserError("--batch must be >= 1")
    model, config, digest = load_model(args.config, args.checkpoint)
    manifest = export_model(model, config, args.out, opset=args.opset, batch=args.batch, verify=not args.no_verify,
                            checkpoint=args.checkpoint, checkpoint_sha256=digest, config_path=args.config)
    for part, entry in manifest["parts"].items():
        ver = entry.get("verification")
        note = f", onnxruntime max |diff| {max(ver['max_abs_diff'].values()):.2e}" if ver else ""
        ins = ", ".join(f"{i['name']}{i['shape']}" for i in entry["inputs"])
        print(f"{Path(args.out) / entry['file']}: {ins} -> {len(entry['outputs'])} outputs{note}")
    print(f"manifest: {Path(args.out) / MANIFEST}")
    return 0


# ----------------------------------------------------------------------------- export on demand (back-ends)


def model_fingerprint(model: nn.Module, config, opset: int = DEFAULT_OPSET, batch: int = 1) -> str:
    """SHA-256 of the weights, the config, torch version, opset and batch: the key of an on-demand export."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": config.to_dict(), "torch": torch.__version__, "opset": int(opset),
                              "batch": int(batch), "format": MANIFEST_FORMAT}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def default_export_cache() -> Path:
    import os
    env = os.environ.get("BEVFUSION_ONNX_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bevfusion_ros" / "onnx"


def ensure_export(model: nn.Module, onnx_dir: str | Path | None = None, cache_root: str | Path | None = None,
                  opset: int = DEFAULT_OPSET, batch: int = 1) -> tuple[Path, dict]:
    """An export folder for ``model``: ``onnx_dir`` when given (checked against the model), else an
    on-demand export under ``cache_root`` keyed by :func:`model_fingerprint` (reused when present)."""
    config = model.config
    if onnx_dir is not None:
        manifest = load_manifest(onnx_dir)
        check_manifest_matches(manifest, model, config)
        return Path(onnx_dir), manifest
    root = Path(cache_root) if cache_root is not None else default_export_cache()
    folder = root / f"{config.name}-{model_fingerprint(model, config, opset, batch)[:20]}"
    if (folder / MANIFEST).is_file():
        try:
            manifest = load_manifest(folder)
            check_manifest_matches(manifest, model, config)
            return folder, manifest
        except UserError:
            pass  # a half-written or foreign folder: export again
    was_training = model.training
    device = next(model.parameters()).device
    import os
    import shutil
    tmp = root / f".{folder.name}.tmp-{os.getpid()}"
    try:
        manifest = export_model(model, config, tmp, opset=opset, batch=batch, verify=False)
    finally:
        model.to(device).train(was_training)
    try:
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError:  # another process finished the same export first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return folder, load_manifest(folder)
    return folder, manifest
