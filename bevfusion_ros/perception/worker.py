"""Run the model off the ingestion thread with a queue of depth 1, drop-oldest.

Under overload the worker always processes the newest submitted item; an item still waiting when a newer
one arrives is dropped and reported through ``on_drop`` (so the node counts it and the replay evaluation
can list the frame as dropped, with the reason). Latency cannot grow without bound: at most one item
waits while one is being processed.

Two workers in a row (frame assembly, then the model) form a pipeline: :class:`JustInTimeGate` holds the
upstream worker back until the downstream one is about to be free, so the upstream starts on the newest
item just in time -- the model stays busy (assembly of frame n+1 overlaps inference of frame n) without
assembling frames that would go stale waiting for it.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")


class LatestOnlyWorker(Generic[Item]):
    """One background thread; ``submit`` never blocks."""

    def __init__(self, process: Callable[[Item], None], on_drop: Callable[[Item], None] | None = None,
                 on_error: Callable[[Item, BaseException], None] | None = None, name: str = "worker",
                 gate: "JustInTimeGate | None" = None):
        self._process = process
        self._gate = gate
        self._on_drop = on_drop
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Item | None = None
        self._has_pending = False
        self.busy_since: float | None = None     # time.monotonic() when the current item started; None: idle
        self.durations: deque[float] = deque(maxlen=20)   # seconds of the recent items (gate estimates)
        self._stopping = False
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> bool:
        """Queue ``item``; returns False if it replaced (dropped) an older waiting item."""
        dropped: Item | None = None
        replaced = False
        with self._cond:
            if self._stopping:
                dropped, replaced = item, True
            else:
                if self._has_pending:
                    dropped, replaced = self._pending, True
                self._pending, self._has_pending = item, True
                self.submitted += 1
                self._cond.notify()
            if replaced:
                self.dropped += 1
        if replaced and self._on_drop is not None:
            self._on_drop(dropped)
        return not replaced

    @property
    def busy(self) -> bool:
        with self._cond:
            return self.busy_since is not None or self._has_pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running (tests, shutdown). Returns False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.busy_since is None and not self._has_pending, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping and not self._has_pending:
                    return
            if self._gate is not None and not self._stopping:
                self._gate.wait(self)      # newer items may replace the pending one meanwhile
            with self._cond:
                if not self._has_pending:
                    continue
                item, self._pending, self._has_pending = self._pending, None, False
                self.busy_since = start = time.monotonic()
            try:
                self._process(item)
                self.processed += 1
            except BaseException as err:  # noqa: BLE001 - the worker must outlive any one item
                self.errors += 1
                if self._on_error is not None:
                    try:
                        self._on_error(item, err)
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                with self._cond:
                    self.durations.append(time.monotonic() - start)
                    self.busy_since = None
                    self._cond.notify_all()
            if self._stopping:
                with self._cond:
                    if not self._has_pending:
                        return


class JustInTimeGate:
    """Starts the upstream stage's next item when the downstream stage will be free by the time it is done.

    ``wait(upstream)`` (called by the upstream worker before it takes its next item) returns when the
    downstream worker has nothing waiting and is idle, or is busy with less time left (median of its recent
    durations minus the time spent on the current item) than the upstream stage needs (median of its recent
    durations). Without history it waits for the downstream stage to be idle: no overlap, no stale frames.
    """

    def __init__(self, downstream: "LatestOnlyWorker", poll_s: float = 0.002):
        self.downstream = downstream
        self._poll_s = poll_s

    def ready(self, upstream: "LatestOnlyWorker", now: float | None = None) -> bool:
        worker = self.downstream
        with worker._cond:
            if worker._has_pending:
                return False
            since = worker.busy_since
            if since is None:
                return True
            expected = statistics.median(worker.durations) if worker.durations else None
        with upstream._cond:
            lead = statistics.median(upstream.durations) if upstream.durations else None
        if expected is None or lead is None:
            return False
        now = time.monotonic() if now is None else now
        return expected - (now - since) <= lead

    def wait(self, upstream: "LatestOnlyWorker", timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        worker = self.downstream
        while not self.ready(upstream) and not worker.stopping and not upstream.stopping \
                and time.monotonic() < deadline:
            with worker._cond:
                worker._cond.wait(self._poll_s)


class SweepRateLimit:
    """Passes at most ``max_rate_hz`` sweeps per second of sensor time (0: every sweep), always on arrival.

    Why: with a model slower than the LiDAR, the drop-oldest queue keeps the model busy, but each frame it
    takes has waited for the previous one to finish (half a LiDAR period on average, a whole one at worst)
    and shares the CPU with the next frame's assembly. A rate the machine sustains lets every passed sweep
    start the moment it arrives, on an idle CPU. Decided on the sweeps' own stamps, so a replay at any
    speed, or a machine that stalls, passes the same sweeps. ``tolerance_s`` absorbs stamp jitter; a stamp
    going backwards (a restarted bag) starts over."""

    def __init__(self, max_rate_hz: float, tolerance_s: float = 0.02):
        if max_rate_hz < 0:
            raise ValueError(f"max_rate_hz must be >= 0, got {max_rate_hz}")
        self.period_us = 0 if max_rate_hz == 0 else int(round(1e6 / max_rate_hz))
        self.tolerance_us = int(round(tolerance_s * 1e6))
        self._last_us: int | None = None

    def accept(self, stamp_us: int) -> bool:
        if self.period_us == 0:
            return True
        last = self._last_us
        if last is None or stamp_us < last or stamp_us - last >= self.period_us - self.tolerance_us:
            self._last_us = stamp_us
            return True
        return False
