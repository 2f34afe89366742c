"""The depth-1 drop-oldest worker: newest item wins, every drop is reported, errors do not kill it."""
from __future__ import annotations

import threading

from bevfusion_ros.perception.worker import LatestOnlyWorker


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
