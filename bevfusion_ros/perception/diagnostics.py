"""Counters, per-stage latency, input rates and masked cameras -> a plain status structure.

The node feeds :class:`Diagnostics` from its callbacks and worker, publishes :meth:`Diagnostics.status`
as ``diagnostic_msgs/DiagnosticArray`` at 1 Hz (conversion in ``ros/outputs.py``), and logs each kind of
bad input through :class:`LogLimiter` (the first occurrence at once, then at most once per period with
the number suppressed). Thread-safe; no ROS types.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

OK, WARN, ERROR = 0, 1, 2          # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class StatusEntry:
    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of ``values`` (NaN where empty)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


class LatencyStats:
    """The last ``window`` samples of one stage, in milliseconds."""

    def __init__(self, window: int = 1000):
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, ms: float) -> None:
        self.samples.append(float(ms))
        self.count += 1

    def summary(self) -> dict[str, float]:
        out = percentiles(self.samples)
        out["mean"] = float(np.mean(self.samples)) if self.samples else float("nan")
        out["max"] = float(max(self.samples)) if self.samples else float("nan")
        return out


class RateMeter:
    """Events per second over the last ``window_s`` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self.times: deque[float] = deque()
        self.last: float | None = None

    def tick(self, now: float) -> None:
        self.times.append(now)
        self.last = now
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        return len(self.times) / self.window_s

    def age(self, now: float) -> float | None:
        return None if self.last is None else now - self.last


class LogLimiter:
    """Log each key once, then at most once per ``period_s`` with how many were suppressed."""

    def __init__(self, period_s: float = 10.0):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """``(should_log, suppressed_since_last_log)``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last >= self.period_s:
                self._last[key] = now
                suppressed = self._suppressed.pop(key, 0)
                return True, suppressed
            self._suppressed[key] += 1
            return False, 0


class Diagnostics:
    """Everything the node reports about itself. ``stale_after_s``: an input silent that long (while the
    LiDAR runs) is reported as WARN."""

    STAGES = ("ingest", "assemble", "model", "publish", "end_to_end")

    def __init__(self, camera_names: tuple[str, ...], lidar_name: str = "lidar", stale_after_s: float = 1.0,
                 backend: str = "", rate_window_s: float = 5.0):
        self.camera_names = tuple(camera_names)
        self.lidar_name = lidar_name
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.latency = {stage: LatencyStats() for stage in self.STAGES}
        self.rates = {name: RateMeter(rate_window_s) for name in (lidar_name, *self.camera_names)}
        self.masked_counts: Counter[str] = Counter()
        self.last_masked: list[str] = []
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_with_masked_cameras = 0
        self.info: dict[str, str] = {"backend": backend, "calibration": "tf", "plan_rebuilds": "0"}
        self._last_error_total = 0
        self._last_error_change = -1e9

    # ------------------------------------------------------------------ feeding
    def count(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.counters[reason] += n

    def tick(self, input_name: str, now: float | None = None) -> None:
        with self._lock:
            meter = self.rates.get(input_name)
            if meter is not None:
                meter.tick(time.monotonic() if now is None else now)

    def record_latency(self, stage: str, ms: float) -> None:
        with self._lock:
            self.latency.setdefault(stage, LatencyStats()).add(ms)

    def frame_processed(self, masked_cameras: list[str]) -> None:
        with self._lock:
            self.frames_processed += 1
            self.last_masked = list(masked_cameras)
            if masked_cameras:
                self.frames_with_masked_cameras += 1
            self.masked_counts.update(masked_cameras)

    def frame_dropped(self, reason: str) -> None:
        with self._lock:
            self.frames_dropped += 1
            self.counters[f"dropped:{reason}"] += 1

    def set_info(self, key: str, value) -> None:
        with self._lock:
            self.info[key] = str(value)

    # ------------------------------------------------------------------ reporting
    def snapshot(self) -> dict:
        """A JSON-able summary (for tests, logs and the replay report)."""
        with self._lock:
            return {
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "frames_with_masked_cameras": self.frames_with_masked_cameras,
                "counters": dict(self.counters),
                "masked_counts": dict(self.masked_counts),
                "latency_ms": {stage: stats.summary() for stage, stats in self.latency.items()},
                "info": dict(self.info),
            }

    def status(self, now: float | None = None, prefix: str = "perception") -> list[StatusEntry]:
        now = time.monotonic() if now is None else now
        with self._lock:
            entries = [self._pipeline_status(prefix), self._input_status(prefix, now),
                       self._error_status(prefix, now)]
        return entries

    def _pipeline_status(self, prefix: str) -> StatusEntry:
        values = {"backend": self.info.get("backend", ""), "frames_processed": str(self.frames_processed),
                  "frames_dropped": str(self.frames_dropped),
                  "frames_with_masked_cameras": str(self.frames_with_masked_cameras)}
        for key, value in self.info.items():
            values.setdefault(key, value)
        for stage, stats in self.latency.items():
            summary = stats.summary()
            for key in ("p50", "p99", "max"):
                values[f"latency_{stage}_{key}_ms"] = f"{summary[key]:.1f}"
        return StatusEntry(f"{prefix}: pipeline", OK, f"{self.frames_processed} frames, "
                           f"{self.frames_dropped} dropped", values)

    def _input_status(self, prefix: str, now: float) -> StatusEntry:
        values: dict[str, str] = {}
        stale = []
        lidar_age = self.rates[self.lidar_name].age(now)
        lidar_running = lidar_age is not None and lidar_age < self.stale_after_s
        for name, meter in self.rates.items():
            values[f"rate_{name}_hz"] = f"{meter.rate(now):.1f}"
            age = meter.age(now)
            if name != self.lidar_name and lidar_running and (age is None or age > self.stale_after_s):
                stale.append(name)
        values["masked_cameras_last_frame"] = ",".join(self.last_masked)
        for name, n in self.masked_counts.items():
            values[f"masked_frames_{name}"] = str(n)
        level, message = OK, "all inputs live"
        if lidar_age is None:
            level, message = WARN, "no LiDAR received yet"
        elif not lidar_running:
            level, message = WARN, f"LiDAR silent for {lidar_age:.1f} s"
        elif stale or self.last_masked:
            names = sorted(set(stale) | set(self.last_masked))
            level, message = WARN, "cameras missing or masked: " + ", ".join(names)
        return StatusEntry(f"{prefix}: inputs", level, message, values)

    def _error_status(self, prefix: str, now: float) -> StatusEntry:
        total = sum(n for key, n in self.counters.items() if not key.startswith("dropped:"))
        if total != self._last_error_total:
            self._last_error_total = total
            self._last_error_change = now
        recent = now - self._last_error_change < 2 * self.stale_after_s + 1.0
        values = {key: str(n) for key, n in sorted(self.counters.items())}
        if total == 0:
            return StatusEntry(f"{prefix}: input errors", OK, "no bad input", values)
        level = WARN if recent else OK
        return StatusEntry(f"{prefix}: input errors", level, f"{total} bad inputs so far"
                           + (" (recent)" if recent else ""), values)
