"""The CUDA kernel's indexing, run on the CPU: the fp32 instantiations of ``KERNEL_SOURCE`` compiled with g++
(CUDA built-ins emulated by a serial loop over blocks and threads) equal the torch path. Catches indexing
errors in the kernel on machines without a GPU; skipped where no C++ compiler is installed."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from bev_pool import BEVPoolPlan, pool_fused, pool_points
from bev_pool.cuda import KERNEL_SOURCE, THREADS_PER_BLOCK

from .conftest import materialize, random_geometry

COMPILER = shutil.which("g++")
pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs g++ to compile the kernel for the CPU")

PRELUDE = r"""
#include <cmath>
#include <cstdio>
#include <cstdlib>
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__
#define __align__(n) alignas(n)
struct Dim3 { long long x; };
static Dim3 blockIdx, threadIdx, blockDim;
using std::fmaf;
"""

HARNESS = r"""
template <int V, bool W>
static void run(long long blocks, const float* table, const float* depth, const long long* point_index,
                const long long* row_index, const long long* starts, const long long* lengths,
                const long long* cells, float* out, long long intervals, int channels) {
  blockDim.x = THREADS;
  for (long long b = 0; b < blocks; ++b) {
    blockIdx.x = b;
    for (long long t = 0; t < THREADS; ++t) {
      threadIdx.x = t;
      bev_pool_intervals<float, V, W>(table, depth, point_index, row_index, starts, lengths, cells, out,
                                      intervals, channels);
    }
  }
}
static void* load(const char* path, size_t bytes) {
  void* data = aligned_alloc(64, (bytes + 64) / 64 * 64);
  FILE* file = fopen(path, "rb");
  if (!file || fread(data, 1, bytes, file) != bytes) { fprintf(stderr, "read %s\n", path); exit(2); }
  fclose(file);
  return data;
}
int main(int argc, char** argv) {
  // args: dir channels vector weighted points intervals cells table_rows depth_size
  const char* dir = argv[1];
  int channels = atoi(argv[2]), vector = atoi(argv[3]), weighted = atoi(argv[4]);
  long long points = atoll(argv[5]), intervals = atoll(argv[6]), cells = atoll(argv[7]);
  long long table_rows = atoll(argv[8]), depth_size = atoll(argv[9]);
  char path[4096];
#define LOAD(name, type, count) (snprintf(path, sizeof path, "%s/" name, dir), (type*)load(path, (count) * sizeof(type)))
  float* table = LOAD("table.bin", float, table_rows * channels);
  float* depth = LOAD("depth.bin", float, depth_size);
  long long* point_index = LOAD("point_index.bin", long long, points);
  long long* row_index = LOAD("row_index.bin", long long, points);
  long long* starts = LOAD("starts.bin", long long, intervals);
  long long* lengths = LOAD("lengths.bin", long long, intervals);
  long long* cell_ids = LOAD("cells.bin", long long, intervals);
  float* out = (float*)calloc(cells * channels, sizeof(float));
  long long blocks = (intervals * (channels / vector) + THREADS - 1) / THREADS;
  if (weighted && vector == 4) run<4, true>(blocks, table, depth, point_index, row_index, starts, lengths, cell_ids, out, intervals, channels);
  else if (weighted && vector == 2) run<2, true>(blocks, table, depth, point_index, row_index, starts, lengths, cell_ids, out, intervals, channels);
  else if (weighted) run<1, true>(blocks, table, depth, point_index, row_index, starts, lengths, cell_ids, out, intervals, channels);
  else if (vector == 4) run<4, false>(blocks, table, depth, point_index, row_index, starts, lengths, cell_ids, out, intervals, channels);
  else run<1, false>(blocks, table, depth, point_index, row_index, starts, lengths, cell_ids, out, intervals, channels);
  snprintf(path, sizeof path, "%s/out.bin", dir);
  FILE* file = fopen(path, "wb");
  fwrite(out, sizeof(float), cells * channels, file);
  fclose(file);
  return 0;
}
"""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kernel")
    kernel = "\n".join(line for line in KERNEL_SOURCE.splitlines() if "__half" not in line and "cuda_fp16" not in line)
    source = folder / "emulator.cpp"
    source.write_text(PRELUDE + f"#define THREADS {THREADS_PER_BLOCK}\n" + kernel + HARNESS)
    binary = folder / "emulator"
    subprocess.run([COMPILER, "-O1", "-std=c++17", str(source), "-o", str(binary)], check=True,
                   capture_output=True, text=True)
    return binary


def _run(binary, folder, plan, table, depth, row_index, vector, weighted):
    arrays = {"table": table, "depth": depth, "point_index": plan.point_index, "row_index": row_index,
              "starts": plan.interval_starts, "lengths": plan.interval_lengths, "cells": plan.interval_cells}
    for name, tensor in arrays.items():
        tensor.contiguous().numpy().tofile(folder / f"{name}.bin")
    channels = table.shape[1]
    subprocess.run([str(binary), str(folder), str(channels), str(vector), str(int(weighted)),
                    str(plan.num_points), str(plan.interval_cells.numel()), str(plan.num_cells),
                    str(table.shape[0]), str(depth.numel())], check=True)
    return torch.from_numpy(np.fromfile(folder / "out.bin", dtype=np.float32)).view(-1, channels)


@pytest.mark.parametrize("channels,vector", [(8, 4), (6, 2), (3, 1)])
def test_kernel_emulation_matches_torch_path(emulator, tmp_path, small_grid, channels, vector):
    shape = (2, 3, 9, 4, 6)
    plan = BEVPoolPlan.from_geometry(random_geometry(shape, small_grid), small_grid)
    generator = torch.Generator().manual_seed(7)
    depth_probs = torch.rand(*shape, generator=generator)
    feats = torch.randn(shape[0], shape[1], channels, shape[3], shape[4], generator=generator)
    expected = pool_fused(plan, depth_probs, feats).permute(0, 2, 3, 1).reshape(-1, channels)
    table = feats.permute(0, 1, 4, 3, 2).reshape(-1, channels)  # the layout cuda.fused_forward passes
    fused = _run(emulator, tmp_path, plan, table, depth_probs.reshape(-1), plan.pixel_index, vector, True)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    point_feats = materialize(depth_probs, feats)
    classic_vector = 4 if channels % 4 == 0 else 1
    classic = _run(emulator, tmp_path, plan, point_feats, depth_probs.reshape(-1), plan.point_index,
                   classic_vector, False)
    torch.testing.assert_close(classic, pool_points(plan, point_feats).permute(0, 2, 3, 1).reshape(-1, channels),
                               rtol=1e-5, atol=1e-5)
