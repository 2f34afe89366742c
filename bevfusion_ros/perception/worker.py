"""Run the model off the ingestion thread with a queue of depth 1, drop-oldest.

Under overload the worker always processes the newest submitted item; an item still waiting when a newer
one arrives is dropped and reported through ``on_drop`` (so the node counts it and the replay evaluation
can list the frame as dropped, with the reason). Latency cannot grow without bound: at most one item
waits while one is being processed.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

Item = TypeVar("Item")


class LatestOnlyWorker(Generic[Item]):
    """One background thread; ``submit`` never blocks."""

    def __init__(self, process: Callable[[Item], None], on_drop: Callable[[Item], None] | None = None,
                 on_error: Callable[[Item, BaseException], None] | None = None, name: str = "worker"):
        self._process = process
        self._on_drop = on_drop
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Item | None = None
        self._has_pending = False
        self._busy = False
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
            return self._busy or self._has_pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running (tests, shutdown). Returns False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._has_pending), timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping and not self._has_pending:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
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
                    self._busy = False
                    self._cond.notify_all()
            if self._stopping:
                with self._cond:
                    if not self._has_pending:
                        return
