"""Row-partitioned parallelism for the CPU dataflows.

Each conv's output rows are split into one contiguous range per worker; a worker gathers, multiplies and
scatters only into its own rows, with single-threaded torch ops, so workers never share an output row (no
atomics, no locks) and every row is accumulated in the same offset order whatever the thread count: results
are bitwise identical for 1, 2 or N threads. There is one join per conv instead of an OpenMP barrier per
torch op, which also keeps a loaded machine (threads descheduled at random) from stalling every op.

The worker count is ``torch.get_num_threads()`` at call time (the standard torch knob). Pool threads run
their torch ops with one intra-op thread (``torch.set_num_threads`` is per thread for OpenMP and MKL).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

_LOCAL = threading.local()
_POOL_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_PID = os.getpid()


def _single_threaded_worker() -> None:
    torch.set_num_threads(1)


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads whose torch ops run single-threaded (a cache, not config)."""
    global _POOLS_PID
    with _POOL_LOCK:
        if os.getpid() != _POOLS_PID:          # forked child: the parent's pool threads do not exist here
            _POOLS.clear()
            _POOLS_PID = os.getpid()
        pool = _POOLS.get(workers)
        if pool is None:
            caller_threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparse_conv",
                                      initializer=_single_threaded_worker)
            # start every worker now, then restore the process default new threads inherit
            list(pool.map(lambda _: None, range(workers)))
            torch.set_num_threads(caller_threads)
            _POOLS[workers] = pool
        return pool


def row_ranges(n_rows: int, parts: int) -> list[tuple[int, int]]:
    step = -(-n_rows // parts)
    return [(begin, min(begin + step, n_rows)) for begin in range(0, n_rows, step)] if n_rows else []


def run_partitioned(task: Callable[[int, int], None], n_rows: int, workers: int, min_rows: int = 2048) -> None:
    """Call task(begin, end) over ``workers`` contiguous row ranges in parallel (inline when small or 1)."""
    parts = max(1, min(workers, n_rows // min_rows))
    if parts == 1:
        task(0, n_rows)
        return
    ranges = row_ranges(n_rows, parts)

    # grad mode and inference mode are per thread: run the workers in the caller's inference mode (outputs
    # allocated under torch.inference_mode() are inference tensors, written in place by the workers)
    inference = torch.is_inference_mode_enabled()

    def guarded(begin: int, end: int) -> None:
        with torch.inference_mode(inference), torch.no_grad():   # the dataflows are autograd-free
            task(begin, end)

    futures = [worker_pool(parts).submit(guarded, begin, end) for begin, end in ranges]
    for future in futures:
        future.result()


def offset_row_bounds(out_idx: torch.Tensor, offsets_ptr: Sequence[int], boundaries: Sequence[int]) -> list[list[int]]:
    """For each offset, the pair positions where output rows cross each boundary (pairs sorted by output row
    within an offset): bounds[k][j] = first pair of offset k whose output row >= boundaries[j]."""
    limits = torch.tensor(list(boundaries), dtype=out_idx.dtype)
    result = []
    for k in range(len(offsets_ptr) - 1):
        start, stop = offsets_ptr[k], offsets_ptr[k + 1]
        if stop == start:
            result.append([start] * len(boundaries))
            continue
        pos = torch.searchsorted(out_idx[start:stop], limits)
        result.append([start + int(p) for p in pos.tolist()])
    return result


def requested_workers() -> int:
    """Worker count for the current call: torch.get_num_threads() as the caller set it (also inside
    ``single_threaded_ops``, which lowers the calling thread's own torch thread count to 1)."""
    return getattr(_LOCAL, "workers", None) or torch.get_num_threads()


@contextmanager
def single_threaded_ops() -> Iterator[int]:
    """Run the calling thread's torch ops with one intra-op thread; parallelism comes from our workers.

    On a machine whose cores are shared with other processes, an OpenMP region whose threads get
    descheduled makes every other thread spin at its barrier; measured here, kernel maps built with 2
    OpenMP threads under load took 12x longer than with 1. Yields the worker count the caller asked for.
    """
    outer = getattr(_LOCAL, "workers", None)
    if outer is not None:
        yield outer
        return
    workers = torch.get_num_threads()
    _LOCAL.workers = workers
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield workers
    finally:
        if workers > 1:
            torch.set_num_threads(workers)
        _LOCAL.workers = None


def parallel_map(function: Callable, items: Sequence, workers: int) -> list:
    """[function(item) for item in items] on up to ``workers`` pool threads (in order; inline for 1)."""
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]

    def guarded(item):
        with torch.no_grad():
            return function(item)

    pool = worker_pool(min(workers, len(items)))
    return [future.result() for future in [pool.submit(guarded, item) for item in items]]
