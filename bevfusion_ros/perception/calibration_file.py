"""Read sensor extrinsics from a calibration YAML (``calib/*.yaml``, as SemAlign writes them).

Files with a ``transforms:`` list (the rig format of docs/calibration.md, written by the calibration tools)
are read with ``bevfusion_ros.calibration.calib_io.load_rig``, the one reader of that format. Otherwise the
accepted layout (each sensor either a 4x4 matrix or translation + quaternion w, x, y, z; extra keys are
ignored, so richer files from the calibration tools load too)::

    base_frame: base_link
    sensors:
      CAM_FRONT:
        T_base_sensor: [[...], [...], [...], [...]]     # maps sensor points into base_frame
      LIDAR_TOP:
        translation: [0.94, 0.0, 1.84]
        rotation: [0.706, -0.015, 0.017, -0.708]       # w, x, y, z

A top-level ``extrinsics:`` or ``sensor2ego:`` mapping is accepted in place of ``sensors:``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from bevfusion_ros import geometry as geo
from bevfusion_ros.errors import UserError


def _sensor_transform(name: str, entry) -> np.ndarray:
    if isinstance(entry, dict):
        for key in ("T_base_sensor", "T_ego_sensor", "sensor2ego", "matrix"):
            if key in entry:
                return _sensor_transform(name, entry[key])
        if "translation" in entry and "rotation" in entry:
            return geo.make_transform(np.asarray(entry["rotation"], float), np.asarray(entry["translation"], float))
    matrix = np.asarray(entry, dtype=np.float64)
    if matrix.shape == (4, 4) and np.isfinite(matrix).all():
        return matrix
    raise UserError(f"calibration entry {name!r}: expected a 4x4 matrix or translation + rotation (w,x,y,z), "
                    f"got {entry!r}")


def load_extrinsics(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """``(base_frame, {sensor frame: T_base_sensor})`` from a calibration YAML; UserError when unusable."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"cannot read calibration file {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"calibration file {path}: expected a mapping at the top level")
    if "transforms" in data:
        from bevfusion_ros.calibration.calib_io import load_rig

        rig = load_rig(path)      # CalibrationFileError is a UserError
        frames = {child for (_, child) in rig.transforms} - {rig.base_frame}
        return rig.base_frame, {frame: rig.T_base(frame) for frame in sorted(frames)}
    sensors = next((data[key] for key in ("sensors", "extrinsics", "sensor2ego") if key in data), None)
    if not isinstance(sensors, dict) or not sensors:
        raise UserError(f"calibration file {path}: no 'sensors:' mapping of sensor frame -> extrinsics")
    return str(data.get("base_frame", "base_link")), {
        str(name): _sensor_transform(str(name), entry) for name, entry in sensors.items()}
