"""SparseEncoder: shapes, training, spconv equivalence, checkpoint loading, inference fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sparse_conv as sc
from sparse_conv.testing import max_rel_err, sort_by_coords
from sparse_conv.weights import to_spconv_weight

TINY = dict(encoder_channels=((8, 8, 16), (16, 16, 16), (16, 16, 32), (32, 32)), base_channels=8,
            output_channels=32)


def _randomise_batchnorm(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                n = bn.num_features
                bn.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                bn.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def _cloud(seed: int, n: int, half_extent: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([2 * half_extent, 2 * half_extent, 8.0]) \
        - torch.tensor([half_extent, half_extent, 5.0])
    return torch.cat([xyz, torch.rand(n, 2, generator=gen)], dim=1)


def _real_crop(half_extent: float) -> torch.Tensor | None:
    from bevfusion_ros.paths import shared_data_dir
    path = shared_data_dir() / "spconv-benchmark-pc.npz"
    if not path.is_file():
        return None
    pc = torch.from_numpy(np.load(path)["pc"])
    keep = (pc[:, 0].abs() < half_extent) & (pc[:, 1].abs() < half_extent)
    pc = pc[keep]
    return torch.cat([pc, torch.zeros(len(pc), 1), torch.ones(len(pc), 1) * 0.05], dim=1)


def test_output_shape_follows_the_input_grid_for_nuscenes_and_tiny_configs():
    assert sc.SparseEncoder().output_shape(2) == (2, 256, 180, 180)
    tiny = sc.SparseEncoder(sparse_shape=(360, 360, 41), **TINY)
    assert tiny.output_shape(1) == (1, 64, 45, 45)
    assert sc.SparseEncoder(sparse_shape=(720, 720, 41)).output_shape(1) == (1, 256, 90, 90)


def test_train_mode_forward_backward_reaches_every_parameter():
    torch.manual_seed(0)
    enc = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY).train()
    feats, coords = sc.batch_voxelize([_cloud(1, 3000, 4.8), _cloud(2, 2000, 4.8)], (0.15, 0.15, 0.2),
                                      (-4.8, -4.8, -5, 4.8, 4.8, 3))
    out = enc(feats, coords, 2)
    assert out.shape == enc.output_shape(2)
    out.square().mean().backward()
    for name, parameter in enc.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert enc.conv_input[1].num_batches_tracked.item() == 1


def test_encoder_matches_spconv_single_thread_coordinates_and_features():
    spconv_ref = pytest.importorskip("sparse_conv.testing")
    try:
        import spconv.pytorch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"spconv not importable: {exc}")
    points = _real_crop(9.0)
    if points is None:
        points = _cloud(3, 20000, 9.0)
    feats, coords = sc.batch_voxelize([points], (0.075, 0.075, 0.2), (-9, -9, -5, 9, 9, 3), 10, 160000)
    enc = sc.SparseEncoder(sparse_shape=(240, 240, 41)).eval()
    _randomise_batchnorm(enc, 4)
    net = spconv_ref.build_spconv_encoder(enc).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)                                   # spconv's CPU scatter races with > 1 thread
    try:
        with torch.no_grad():
            ours = enc.forward_sparse(sc.SparseTensor(feats, coords, enc.sparse_shape, 1))
            their_coords, their_feats = spconv_ref.run_spconv_encoder(net, feats, coords, 1)
    finally:
        torch.set_num_threads(previous)
    a_coords, a_feats = sort_by_coords(ours.coords, ours.feats, ours.spatial_shape)
    b_coords, b_feats = sort_by_coords(their_coords, their_feats, ours.spatial_shape)
    assert a_coords.shape[0] > 100
    assert torch.equal(a_coords, b_coords)
    assert max_rel_err(a_feats, b_feats) < 1e-5


def test_load_spconv2_state_dict_from_a_spconv_network_reproduces_the_weights():
    try:
        import spconv.pytorch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"spconv not importable: {exc}")
    from sparse_conv.testing import build_spconv_encoder
    source = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY)
    _randomise_batchnorm(source, 5)
    spconv_state = {f"encoders.lidar.backbone.{k}": v for k, v in build_spconv_encoder(source).state_dict().items()}
    target = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY)
    assert sc.load_spconv_state_dict(target, spconv_state, layout="spconv2") == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_spconv1_state_dict_keeps_the_kx_ky_kz_cin_cout_layout_and_rejects_wrong_shapes():
    source = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY)
    state = {k: to_spconv_weight(v, "spconv1") if v.dim() == 5 else v for k, v in source.state_dict().items()}
    target = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY)
    sc.load_spconv_state_dict(target, state, layout="spconv1")
    assert torch.equal(target.conv_out[0].weight, source.conv_out[0].weight)
    spconv2 = {k: to_spconv_weight(v, "spconv2") if v.dim() == 5 else v for k, v in source.state_dict().items()}
    with pytest.raises(ValueError, match="does not match"):
        sc.load_spconv_state_dict(target, spconv2, layout="spconv1")
    with pytest.raises(KeyError, match="lacks"):
        sc.load_spconv_state_dict(target, {k: v for k, v in state.items() if "conv_out" not in k}, layout="spconv1")


def test_fuse_for_inference_equals_the_eval_mode_encoder():
    enc = sc.SparseEncoder(sparse_shape=(64, 64, 41), **TINY).eval()
    _randomise_batchnorm(enc, 6)
    feats, coords = sc.batch_voxelize([_cloud(7, 4000, 4.8)], (0.15, 0.15, 0.2), (-4.8, -4.8, -5, 4.8, 4.8, 3))
    fused = sc.fuse_for_inference(enc)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
    with torch.no_grad():
        expected = enc(feats, coords, 1)
        got = fused(feats, coords, 1)
    assert max_rel_err(got, expected) < 1e-5
    assert enc.training is False and any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())
