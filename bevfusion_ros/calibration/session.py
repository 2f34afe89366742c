"""The calibration node's logic without ROS: collect frames, run SemAlign against the current rig file,
decide, persist.

Decision rule: the current calibration (``calib/<rig>.yaml``) is the prior. Per unknown (camera, or the
rig), the result is applied only if its loss is lower than the prior's loss on the same frames by more than
``min_improvement`` (relative) and it is a valid rigid transform. Anything else is refused with the reason;
the file is then not touched. Applied results are written atomically (calib_io.save_rig; the previous file
becomes ``.bak``) only when ``auto_apply`` is on, otherwise they are reported as proposals.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bevfusion_ros.calibration import calib_io, lie
from bevfusion_ros.calibration.semalign import CalibrationResult, Calibrator
from bevfusion_ros.calibration.semantics import SemanticFrame


@dataclass
class SessionOutcome:
    applied: bool                              # the rig file now holds the new calibration
    accepted_cameras: list[str]                # cameras whose new extrinsics beat the current ones
    reason: str
    result: CalibrationResult | None
    T_lidar_cam: dict[str, np.ndarray] = field(default_factory=dict)   # the calibration in force afterwards
    T_base_lidar: np.ndarray | None = None

    @property
    def loss(self) -> float:
        return self.result.loss if self.result else math.nan

    @property
    def prior_loss(self) -> float:
        return self.result.prior_loss if self.result else math.nan

    @property
    def confidence(self) -> float:
        return self.result.confidence if self.result else 0.0

    @property
    def duration(self) -> float:
        return self.result.duration if self.result else 0.0


class CalibrationSession:
    """Thread-safe frame buffer + one calibration run at a time."""

    def __init__(self, calib_path: str | Path, calibrator: Calibrator, frames_needed: int = 5,
                 auto_apply: bool = True, cameras: list[str] | None = None):
        if frames_needed < 1:
            raise ValueError(f"frames_needed must be >= 1, got {frames_needed}")
        self.calib_path = Path(calib_path)
        self.calibrator = calibrator
        self.frames_needed = frames_needed
        self.auto_apply = auto_apply
        self.cameras = cameras
        self._frames: deque[SemanticFrame] = deque(maxlen=frames_needed)
        self._lock = threading.Lock()
        self._running = threading.Lock()

    # ------------------------------------------------------------------ frames

    def add_frame(self, frame: SemanticFrame) -> int:
        with self._lock:
            self._frames.append(frame)
            return len(self._frames)

    @property
    def frame_count(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def ready(self) -> bool:
        return self.frame_count >= self.frames_needed

    def current(self) -> calib_io.RigCalibration:
        """The rig file in force (raises CalibrationFileError when missing or corrupt)."""
        return calib_io.load_rig(self.calib_path)

    # ------------------------------------------------------------------ run

    def run(self) -> SessionOutcome:
        if not self._running.acquire(blocking=False):
            return SessionOutcome(False, [], "a calibration is already running", None)
        try:
            return self._run()
        finally:
            self._running.release()

    def _run(self) -> SessionOutcome:
        try:
            rig = self.current()
        except calib_io.CalibrationFileError as err:
            return SessionOutcome(False, [], f"current calibration unusable, nothing changed: {err}", None)
        T_lidar_cam = rig.T_lidar_cam()
        T_base_lidar = rig.T_base(rig.lidar_frame)
        with self._lock:
            frames = list(self._frames)
        if len(frames) < self.frames_needed:
            return SessionOutcome(False, [], f"not enough frames: {len(frames)} of {self.frames_needed} collected",
                                  None, T_lidar_cam, T_base_lidar)
        cameras = [c for c in (self.cameras or sorted(T_lidar_cam)) if c in T_lidar_cam]
        cameras = [c for c in cameras if any(c in f.cameras for f in frames)]
        if not cameras:
            return SessionOutcome(False, [], "no camera of the rig file appears in the collected frames", None,
                                  T_lidar_cam, T_base_lidar)
        prior = {c: lie.invert(T_lidar_cam[c]) for c in cameras}
        result = self.calibrator.calibrate(frames, prior, cameras)
        accepted = [c for c in result.improved_cameras if lie.is_rigid(result.T[c])]
        if not accepted:
            return SessionOutcome(False, [], f"refused: {result.reason}", result, T_lidar_cam, T_base_lidar)
        new = dict(T_lidar_cam)
        for cam in accepted:
            new[cam] = lie.invert(result.T[cam])
        if not self.auto_apply:
            return SessionOutcome(False, accepted, f"proposal (auto_apply off): {result.reason}", result,
                                  T_lidar_cam, T_base_lidar)
        try:
            calib_io.save_rig_calibration(self.calib_path, {c: new[c] for c in accepted}, T_base_lidar,
                                          metadata={"source": "SemAlign", "loss": float(result.loss),
                                                    "prior_loss": float(result.prior_loss),
                                                    "confidence": float(result.confidence),
                                                    "cameras_updated": accepted})
        except (calib_io.CalibrationFileError, OSError) as err:
            return SessionOutcome(False, accepted, f"could not write {self.calib_path}: {err}", result,
                                  T_lidar_cam, T_base_lidar)
        return SessionOutcome(True, accepted, f"applied to {', '.join(accepted)}: {result.reason}", result,
                              new, T_base_lidar)
