"""Diagnostics: latency percentiles, rates, WARN on a stopped camera, counted bad input, rate-limited logs."""
from __future__ import annotations

from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.perception.diagnostics import OK, WARN, Diagnostics, LogLimiter


def by_name(entries):
    return {entry.name.split(": ")[1]: entry for entry in entries}


def test_all_inputs_live_is_ok_and_a_stopped_camera_is_warn():
    diag = Diagnostics(CAMERA_NAMES, backend="torch")
    for step in range(40):
        now = step * 0.05
        diag.tick("lidar", now)
        for name in CAMERA_NAMES:
            if name != "CAM_BACK" or now < 0.5:
                diag.tick(name, now)
    status = by_name(diag.status(now=1.0))
    assert status["inputs"].level == OK
    status = by_name(diag.status(now=1.95))
    assert status["inputs"].level == WARN and "CAM_BACK" in status["inputs"].message
    assert float(status["inputs"].values["rate_lidar_hz"]) == 40 / 5.0


def test_masked_cameras_in_the_last_frame_are_warn_and_counted():
    diag = Diagnostics(CAMERA_NAMES)
    diag.tick("lidar", 0.0)
    for name in CAMERA_NAMES:
        diag.tick(name, 0.0)
    diag.frame_processed(["CAM_FRONT"])
    status = by_name(diag.status(now=0.1))
    assert status["inputs"].level == WARN and "CAM_FRONT" in status["inputs"].message
    assert status["inputs"].values["masked_frames_CAM_FRONT"] == "1"
    diag.frame_processed([])
    assert by_name(diag.status(now=0.2))["inputs"].level == OK
    assert diag.snapshot()["frames_with_masked_cameras"] == 1


def test_bad_input_counters_warn_while_recent_then_settle_to_ok():
    diag = Diagnostics(CAMERA_NAMES, stale_after_s=1.0)
    assert by_name(diag.status(now=0.0))["input errors"].level == OK
    diag.count("empty_cloud")
    status = by_name(diag.status(now=1.0))["input errors"]
    assert status.level == WARN and status.values["empty_cloud"] == "1"
    assert by_name(diag.status(now=10.0))["input errors"].level == OK


def test_latency_percentiles_and_drops_are_reported():
    diag = Diagnostics(CAMERA_NAMES)
    for ms in range(1, 101):
        diag.record_latency("end_to_end", ms)
    diag.frame_dropped("queue_overflow")
    snap = diag.snapshot()
    assert abs(snap["latency_ms"]["end_to_end"]["p50"] - 50.5) < 1e-6
    assert snap["latency_ms"]["end_to_end"]["max"] == 100
    assert snap["frames_dropped"] == 1 and snap["counters"]["dropped:queue_overflow"] == 1
    values = by_name(diag.status(now=0.0))["pipeline"].values
    assert values["latency_end_to_end_p99_ms"] == "99.0" and values["frames_dropped"] == "1"


def test_log_limiter_logs_the_first_occurrence_then_once_per_period_with_the_suppressed_count():
    limiter = LogLimiter(period_s=10.0)
    assert limiter.check("empty_cloud", now=0.0) == (True, 0)
    assert limiter.check("empty_cloud", now=1.0) == (False, 0)
    assert limiter.check("empty_cloud", now=2.0) == (False, 0)
    assert limiter.check("nan_points", now=2.0) == (True, 0)
    assert limiter.check("empty_cloud", now=10.5) == (True, 2)
