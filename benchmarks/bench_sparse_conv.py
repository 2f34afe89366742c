"""sparse_conv vs spconv 2.x (CPU) on BEVFusion's SparseEncoder, real LiDAR cloud, batch 1, fp32.

Workload: ``spconv-benchmark-pc.npz`` (198k points, x/y/z only; intensity and dt set to 0 to make the
5-channel input) voxelized on the nuScenes grid (0.075 x 0.075 x 0.2 m, range [-54, -54, -5, 54, 54, 3],
max 10 points/voxel, 160k voxels) -> about 117k voxels -> SparseEncoder forward (default BEVFusion
configuration, random weights and BN statistics shared by both implementations).

Threads: each thread count runs in its own subprocess with OMP_NUM_THREADS / MKL_NUM_THREADS set and
torch.set_num_threads called, because spconv ships its own libgomp that only reads OMP_NUM_THREADS. Within a
subprocess, ours and spconv alternate run by run, so load drift on a shared machine hits both alike.
Timings are medians over RUNS runs after one warm-up. "ours" is the inference configuration
(``fuse_for_inference``: BN folded, ReLU fused) and includes building every kernel map (spconv's forward
also builds its indices); ``kmap_*`` is the kernel-map share of our forward. GFLOP/s counts the useful
multiply-adds of every conv (pairs x Cin x Cout x 2); the roofline is torch.mm doing the same work as one
[pairs, Cin] x [Cin, Cout] product per conv layer (the GEMM shapes gather-GEMM-scatter needs).
Correctness: max relative error of our output features vs spconv's, taken single-threaded (spconv's CPU
scatter races with more than one thread), on identical output coordinates.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 5
VOXEL_SIZE = (0.075, 0.075, 0.2)
POINT_RANGE = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
REPO_ROOT = Path(__file__).resolve().parent.parent


def _cloud_path() -> Path:
    base = Path(os.environ.get("BEVFUSION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    return base / "spconv-benchmark-pc.npz"


def _setup():
    import numpy as np
    import torch

    import sparse_conv as sc

    torch.manual_seed(0)
    pc = torch.from_numpy(np.load(_cloud_path())["pc"]).float()
    points = torch.cat([pc, torch.zeros(len(pc), 2)], dim=1)
    feats, coords = sc.batch_voxelize([points], VOXEL_SIZE, POINT_RANGE, 10, 160000)
    encoder = sc.SparseEncoder().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in encoder.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                n = bn.num_features
                bn.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
                bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                bn.bias.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return points, feats, coords, encoder


def _median(values):
    return float(statistics.median(values))


def _worker(threads: int) -> dict:
    """Everything measured at one thread count (runs in a subprocess with OMP_NUM_THREADS=threads)."""
    import torch

    import sparse_conv as sc
    from sparse_conv.encoder import sort_by_key
    from sparse_conv.testing import build_spconv_encoder, run_spconv_encoder, sort_by_coords

    torch.set_num_threads(threads)
    points, feats, coords, encoder = _setup()
    fused = sc.fuse_for_inference(encoder)
    try:
        spconv_net = build_spconv_encoder(encoder).eval()
        spconv_error = None
    except Exception as exc:  # noqa: BLE001 - spconv missing: report ours alone
        spconv_net, spconv_error = None, f"{type(exc).__name__}: {exc}"

    cpu_seconds = {"ours": [], "spconv": []}

    def ours_once():
        x = sc.SparseTensor(feats, coords, fused.sparse_shape, 1)
        started, cpu = time.perf_counter(), time.process_time()
        out = fused.forward_sparse(sort_by_key(x))
        cpu_seconds["ours"].append(time.process_time() - cpu)
        return time.perf_counter() - started, x.cache.prebuild_seconds, out

    def spconv_once():
        started, cpu = time.perf_counter(), time.process_time()
        out = run_spconv_encoder(spconv_net, feats, coords, 1)
        cpu_seconds["spconv"].append(time.process_time() - cpu)
        return time.perf_counter() - started, out

    result: dict = {"threads": threads, "voxels": int(feats.shape[0]), "points": int(points.shape[0])}
    ours_s, kmap_s, spconv_s = [], [], []
    with torch.no_grad():
        ours_once()
        if spconv_net is not None:
            spconv_once()
        for _ in range(RUNS):
            seconds, kmap_seconds, ours_out = ours_once()
            ours_s.append(seconds)
            kmap_s.append(kmap_seconds)
            if spconv_net is not None:
                seconds, spconv_out = spconv_once()
                spconv_s.append(seconds)
        result.update(ours_s=_median(ours_s), kmap_s=_median(kmap_s), ours_all_s=ours_s,
                      ours_cpu_s=_median(cpu_seconds["ours"][1:]))
        if spconv_net is not None:
            result.update(spconv_s=_median(spconv_s), spconv_all_s=spconv_s,
                          spconv_cpu_s=_median(cpu_seconds["spconv"][1:]))
            a_coords, a_feats = sort_by_coords(ours_out.coords, ours_out.feats, ours_out.spatial_shape)
            b_coords, b_feats = sort_by_coords(spconv_out[0], spconv_out[1], ours_out.spatial_shape)
            result["coords_equal"] = bool(torch.equal(a_coords, b_coords))
            if result["coords_equal"]:
                result["max_rel_err"] = float((a_feats - b_feats).abs().max() / b_feats.abs().max())
        else:
            result["spconv_error"] = spconv_error

        # useful FLOPs and the torch.mm roofline over the same per-layer GEMM shapes
        x = sort_by_key(sc.SparseTensor(feats, coords, encoder.sparse_shape, 1))
        layers = []
        _trace_layers(encoder, x, layers)
        flops = sum(2 * pairs * c_in * c_out for pairs, c_in, c_out, _ in layers)
        mm_times = []
        for _ in range(3):
            total = 0.0
            for pairs, c_in, c_out, _ in layers:
                a = torch.randn(pairs, c_in)
                b = torch.randn(c_in, c_out)
                started = time.perf_counter()
                torch.mm(a, b)
                total += time.perf_counter() - started
            mm_times.append(total)
        result.update(flops=flops, roofline_s=min(mm_times), layers=[list(layer[:3]) + [layer[3]] for layer in layers])
        result["levels"] = _per_level_submanifold(x, encoder, spconv_net is not None, feats, coords)
    return result


def _trace_layers(encoder, x, layers) -> None:
    """(pairs, Cin, Cout, name) of every conv of one forward."""
    import torch

    from sparse_conv.functional import conv as conv_module
    original = conv_module.apply_kernel_map
    names = {}

    def traced(feats, weight, kmap, *args, **kwargs):
        layers.append((kmap.num_pairs, int(weight.shape[1]), int(weight.shape[2]),
                       "subm" if kmap.identity_offset is not None else "strided"))
        return original(feats, weight, kmap, *args, **kwargs)

    conv_module.apply_kernel_map = traced
    try:
        with torch.no_grad():
            encoder.forward_sparse(x)
    finally:
        conv_module.apply_kernel_map = original
    del names


def _per_level_submanifold(x, encoder, with_spconv: bool, feats, coords) -> list[dict]:
    """One SubM 3x3x3 C->C conv alone at each encoder level (maps prebuilt / indices cached for both)."""
    import torch

    import sparse_conv as sc
    levels = []
    tensors = []
    with torch.no_grad():
        y = encoder.conv_input(x)
        tensors.append(y)
        for stage in encoder.encoder_layers:
            y = stage(y)
            tensors.append(y)
    # tensors[i] holds the output of stage i (the next level's grid) - use the grid the stage's blocks run on
    grids = [tensors[0]] + [t for t in tensors[1:-1]]
    for level, t in enumerate(grids):
        channels = t.feats.shape[1]
        conv = sc.SubMConv3d(channels, channels, 3).eval()
        with torch.no_grad():
            conv(t)
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                conv(t)
                times.append(time.perf_counter() - started)
        entry = {"level": level + 1, "voxels": len(t), "channels": channels, "ours_s": _median(times)}
        if with_spconv:
            import spconv.pytorch as spconv
            sconv = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key="bench").eval()
            st = spconv.SparseConvTensor(t.feats, t.coords.to(torch.int32), list(t.spatial_shape), 1)
            with torch.no_grad():
                sconv(st)                                     # builds and caches the indices in st.indice_dict
                times = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    sconv(st)
                    times.append(time.perf_counter() - started)
            entry["spconv_s"] = _median(times)
        levels.append(entry)
    return levels


def _spawn(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_sparse_conv", "--worker", str(threads)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"bench worker ({threads} threads) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def run() -> dict:
    if not _cloud_path().is_file():
        return {"skipped": f"benchmark cloud not found at {_cloud_path()} (set BEVFUSION_SHARED_DATA)"}
    load_before = _load()
    one = _spawn(1)
    two = _spawn(2)
    result = {
        "voxels": one["voxels"], "points": one["points"],
        "ours_1t_s": one["ours_s"], "ours_2t_s": two["ours_s"],
        "kmap_1t_s": one["kmap_s"], "kmap_2t_s": two["kmap_s"],
        "gflops_1t": one["flops"] / one["ours_s"] / 1e9, "gflops_2t": two["flops"] / two["ours_s"] / 1e9,
        "roofline_gflops_2t": two["flops"] / two["roofline_s"] / 1e9,
        "useful_gflop": one["flops"] / 1e9,
        "ours_1t_cpu_s": one["ours_cpu_s"], "ours_2t_cpu_s": two["ours_cpu_s"],
        "spconv_1t_cpu_s": one.get("spconv_cpu_s"), "spconv_2t_cpu_s": two.get("spconv_cpu_s"),
        "runs": RUNS, "load_avg_1min_before": load_before, "load_avg_1min_after": _load(),
        "levels_1t": one["levels"], "levels_2t": two["levels"], "conv_layers": one["layers"],
        "raw": {"1t": {k: one[k] for k in ("ours_all_s", "spconv_all_s") if k in one},
                "2t": {k: two[k] for k in ("ours_all_s", "spconv_all_s") if k in two}},
    }
    result["fraction_of_roofline_2t"] = result["gflops_2t"] / result["roofline_gflops_2t"]
    if "spconv_s" in one:
        result.update(spconv_1t_s=one["spconv_s"], spconv_2t_s=two["spconv_s"],
                      speedup_vs_spconv_1t=one["spconv_s"] / two["ours_s"],
                      speedup_vs_spconv_2t=two["spconv_s"] / two["ours_s"],
                      speedup_same_threads_1t=one["spconv_s"] / one["ours_s"],
                      coords_equal_vs_spconv=one.get("coords_equal"),
                      max_rel_err_vs_spconv=one.get("max_rel_err"))
    else:
        result["spconv_error"] = one.get("spconv_error")
    try:
        import torch
        result["gpu"] = "available" if torch.cuda.is_available() else "no CUDA device on this machine: GPU rows not measured"
    except Exception:  # noqa: BLE001
        result["gpu"] = "unknown"
    return result


def markdown(result: dict) -> str:
    if "skipped" in result:
        return f"sparse_conv benchmark skipped: {result['skipped']}"

    def fmt(key, digits=3):
        value = result.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"SparseEncoder forward, {result['voxels']} voxels ({result['points']} points), batch 1, fp32, CPU. "
        f"Medians of {result['runs']} runs. Load average before/after: {result['load_avg_1min_before']:.1f} / "
        f"{result['load_avg_1min_after']:.1f} (shared machine: absolute times are noisy).",
        "",
        "| | 1 thread | 2 threads |",
        "|---|---|---|",
        f"| spconv 2.x (s) | {fmt('spconv_1t_s')} | {fmt('spconv_2t_s')} |",
        f"| sparse_conv (s) | {fmt('ours_1t_s')} | {fmt('ours_2t_s')} |",
        f"| kernel maps, inside ours (s) | {fmt('kmap_1t_s')} | {fmt('kmap_2t_s')} |",
        f"| spconv CPU time per forward (s) | {fmt('spconv_1t_cpu_s')} | {fmt('spconv_2t_cpu_s')} |",
        f"| sparse_conv CPU time per forward (s) | {fmt('ours_1t_cpu_s')} | {fmt('ours_2t_cpu_s')} |",
        f"| sparse_conv GFLOP/s | {fmt('gflops_1t', 1)} | {fmt('gflops_2t', 1)} |",
        "",
        f"- speedup vs spconv 1 thread (spconv 1t / ours 2t): **{fmt('speedup_vs_spconv_1t', 2)}x** (target 3x)",
        f"- speedup vs spconv 2 threads: **{fmt('speedup_vs_spconv_2t', 2)}x** (target 1.5x)",
        f"- same threads, 1t: {fmt('speedup_same_threads_1t', 2)}x",
        f"- kernel maps at 2 threads: {fmt('kmap_2t_s')} s (target < 0.2 s)",
        f"- useful work {fmt('useful_gflop', 1)} GFLOP; {fmt('gflops_2t', 1)} GFLOP/s at 2 threads vs torch.mm "
        f"roofline {fmt('roofline_gflops_2t', 1)} GFLOP/s ({100 * result['fraction_of_roofline_2t']:.0f}%, target 70%)",
        f"- max relative error vs spconv (1 thread, identical coordinates: {result.get('coords_equal_vs_spconv')}): "
        f"{result.get('max_rel_err_vs_spconv')}",
        f"- GPU: {result.get('gpu')}",
        "",
        "Submanifold 3x3x3 C->C conv alone per level (maps/indices prebuilt), seconds:",
        "",
        "| level | voxels | C | ours 1t | spconv 1t | ours 2t | spconv 2t |",
        "|---|---|---|---|---|---|---|",
    ]
    for a, b in zip(result["levels_1t"], result["levels_2t"]):
        lines.append(f"| {a['level']} | {a['voxels']} | {a['channels']} | {a['ours_s']:.4f} | "
                     f"{a.get('spconv_s', float('nan')):.4f} | {b['ours_s']:.4f} | {b.get('spconv_s', float('nan')):.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(int(sys.argv[2]))))
    else:
        from benchmarks.run_all import main
        sys.exit(main(["sparse_conv"]))
