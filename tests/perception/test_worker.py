"""The depth-1 drop-oldest worker: newest item wins, every drop is reported, errors do not kill it."""
from __future__ import annotations

import threading
import time

from bevfusion_ros.perception.worker import JustInTimeGate, LatestOnlyWorker


def test_while_busy_only_the_newest_item_waits_and_older_ones_are_dropped_and_counted():
    gate = threading.Event()
    started = threading.Event()
    processed, dropped = [], []

    def process(item):
        processed.append(item)
        started.set()
        gate.wait(5)

    worker = LatestOnlyWorker(process, on_drop=dropped.append)
    worker.submit(0)
    assert started.wait(5)
    for item in (1, 2, 3, 4):
        worker.submit(item)
    gate.set()
    assert worker.wait_idle(5)
    worker.stop()
    assert processed == [0, 4]
    assert dropped == [1, 2, 3]
    assert worker.dropped == 3 and worker.processed == 2


def test_an_exception_in_processing_is_reported_and_the_next_item_still_runs():
    errors, processed = [], []

    def process(item):
        if item == "bad":
            raise RuntimeError("boom")
        processed.append(item)

    worker = LatestOnlyWorker(process, on_error=lambda item, err: errors.append((item, str(err))))
    worker.submit("bad")
    assert worker.wait_idle(5)
    worker.submit("good")
    assert worker.wait_idle(5)
    worker.stop()
    assert errors == [("bad", "boom")] and processed == ["good"] and worker.errors == 1


def test_items_submitted_after_stop_are_dropped_not_lost_silently():
    dropped = []
    worker = LatestOnlyWorker(lambda item: None, on_drop=dropped.append)
    worker.stop()
    assert worker.submit("late") is False and dropped == ["late"]


def _busy_downstream(history: list[float]):
    """A downstream worker in the middle of an item, with ``history`` as its recent durations."""
    release = threading.Event()
    started = threading.Event()

    def process(item):
        started.set()
        release.wait(5)

    worker = LatestOnlyWorker(process)
    worker.durations.extend(history)
    worker.submit("current")
    assert started.wait(5)
    return worker, release


def test_the_gate_opens_at_once_when_the_model_stage_is_idle():
    upstream = LatestOnlyWorker(lambda item: None)
    downstream = LatestOnlyWorker(lambda item: None)
    assert JustInTimeGate(downstream).ready(upstream)
    upstream.stop(), downstream.stop()


def test_the_gate_holds_the_assembly_while_a_frame_already_waits_for_the_model():
    downstream, release = _busy_downstream([0.1])
    downstream.submit("waiting")
    upstream = LatestOnlyWorker(lambda item: None)
    upstream.durations.append(0.2)
    assert not JustInTimeGate(downstream).ready(upstream)
    release.set()
    downstream.stop(), upstream.stop()


def test_the_gate_opens_when_the_model_will_be_free_by_the_time_assembly_is_done():
    downstream, release = _busy_downstream([0.100])   # the model takes ~100 ms
    upstream = LatestOnlyWorker(lambda item: None)
    gate = JustInTimeGate(downstream)
    upstream.durations.append(0.030)                      # assembly takes ~30 ms
    since = downstream.busy_since
    assert not gate.ready(upstream, now=since + 0.050)     # 50 ms left > 30 ms of assembly
    assert gate.ready(upstream, now=since + 0.075)         # 25 ms left: start now
    release.set()
    downstream.stop(), upstream.stop()


def test_without_history_the_gate_waits_for_the_model_to_be_idle():
    downstream, release = _busy_downstream([])
    upstream = LatestOnlyWorker(lambda item: None)
    assert not JustInTimeGate(downstream).ready(upstream, now=downstream.busy_since + 10)
    release.set()
    assert downstream.wait_idle(5)
    assert JustInTimeGate(downstream).ready(upstream)
    downstream.stop(), upstream.stop()


def test_a_gated_pipeline_processes_the_newest_item_and_drops_the_rest():
    done, dropped = [], []
    model = LatestOnlyWorker(lambda item: (done.append(item), time.sleep(0.02)), on_drop=dropped.append)
    assembly = LatestOnlyWorker(lambda item: model.submit(item), on_drop=dropped.append,
                                gate=JustInTimeGate(model))
    for item in range(50):
        assembly.submit(item)
        time.sleep(0.002)
    time.sleep(0.1)
    assert assembly.wait_idle(5) and model.wait_idle(5)
    assembly.stop(), model.stop()
    assert done[-1] == 49 and sorted(done + dropped) == list(range(50))


def test_the_rate_limit_passes_one_sweep_per_period_of_sensor_time_with_jitter_tolerated():
    from bevfusion_ros.perception.worker import SweepRateLimit
    limit = SweepRateLimit(5.0)                        # 20 Hz LiDAR -> every 4th sweep
    stamps = [i * 50_000 + (i % 3) * 700 for i in range(16)]       # +-0.7 ms of stamp jitter
    assert [i for i, s in enumerate(stamps) if limit.accept(s)] == [0, 4, 8, 12]


def test_the_rate_limit_starts_over_when_stamps_go_backwards_and_zero_means_every_sweep():
    from bevfusion_ros.perception.worker import SweepRateLimit
    limit = SweepRateLimit(5.0)
    assert limit.accept(1_000_000) and not limit.accept(1_050_000)
    assert limit.accept(500_000)                       # a restarted bag
    assert not limit.accept(550_000)
    every = SweepRateLimit(0)
    assert all(every.accept(s) for s in (0, 1, 2, 2))
