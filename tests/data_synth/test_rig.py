"""The generator's rig is the real nuScenes rig: embedded numbers equal the shared sample.json's."""
from __future__ import annotations

import numpy as np

from bevfusion_ros.classes import CAMERA_NAMES
from bevfusion_ros.data.synth.rig import embedded_rig, rig_from_sample_json


def test_embedded_rig_equals_real_sample(nuscenes_sample):
    real = rig_from_sample_json(nuscenes_sample / "sample.json")
    embedded = embedded_rig()
    for a, b in zip(real.sensors, embedded.sensors):
        assert a.channel == b.channel
        np.testing.assert_allclose(a.translation, b.translation, atol=1e-12)
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-12)
        assert a.time_offset_us == b.time_offset_us
        if a.intrinsic is not None:
            np.testing.assert_allclose(a.intrinsic, b.intrinsic, atol=1e-9)


def test_embedded_rig_is_plausible():
    rig = embedded_rig()
    assert [c.channel for c in rig.cameras] == list(CAMERA_NAMES)
    for cam in rig.cameras:
        assert -50_000 < cam.time_offset_us <= 0
        assert 1.4 < cam.translation[2] < 1.7
        optical_axis = cam.T_ego_sensor[:3, 2]
        assert abs(optical_axis[2]) < 0.05            # cameras look horizontally
    assert abs(rig.lidar.translation[2] - 1.84) < 0.01
