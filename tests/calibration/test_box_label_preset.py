"""Box-derived labels get their own preset (semalign.BOX_LABEL_PRESET): wide soft borders for search and
refinement (centring each box's points in its oversized region pins translation), then a rotation-only polish
on sharp borders."""
import numpy as np
import torch

from bevfusion_ros.calibration import lie
from bevfusion_ros.calibration.evaluate import load_config, load_eval_data, perturbation
from bevfusion_ros.calibration.refine import RefineStage, refine
from bevfusion_ros.calibration.semalign import BOX_LABEL_PRESET, Calibrator


def test_preset_is_the_base_and_a_config_file_still_overrides_it(tmp_path):
    config = load_config(None, base=BOX_LABEL_PRESET, mode="rig")
    assert len(config.levels) == 4 and config.levels[-1].soft_px < config.levels[2].soft_px
    assert config.polish.level == 3 and config.polish.lr_trans_m == 0.0
    path = tmp_path / "override.yaml"
    path.write_text("polish: null\n")
    assert load_config(str(path), base=BOX_LABEL_PRESET).polish is None
    assert len(load_config(None).levels) == 3            # exact masks keep the default


def test_polish_without_translation_step_keeps_the_translation():
    start = torch.eye(4, dtype=torch.float64)[None]
    start[0, :3, 3] = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)

    def loss_fn(T, level, max_points):              # minimum at identity: would pull translation to 0
        return (T[:, :3, 3] ** 2).sum(1) + (T[:, :3, :3] - torch.eye(3)).pow(2).sum((1, 2))

    out = refine(loss_fn, start, (RefineStage(level=0, iterations=30, lr_rot_deg=0.5, lr_trans_m=0.0),))
    assert torch.allclose(out[0, :3, 3], start[0, :3, 3])


def test_preset_recovers_the_real_keyframe_translation_better_than_the_default(nuscenes_sample):
    data = load_eval_data(str(nuscenes_sample / "sample.json"), None, 1, None)
    cams = list(data.truth)
    delta = perturbation(np.random.default_rng(0), 5.0, 0.25)
    prior = {c: data.truth[c] @ delta for c in cams}
    errors = {}
    for name, base in (("default", None), ("preset", BOX_LABEL_PRESET)):
        config = load_config(None, base=base, mode="rig", threads=1, rot_range_deg=6.0, trans_range_m=0.3)
        result = Calibrator(config).calibrate(data.frames, prior, cams)
        errors[name] = lie.transform_error(result.T[cams[0]], data.truth[cams[0]])
    assert errors["preset"][0] < 0.6 and errors["preset"][1] < 0.06, errors
    assert errors["preset"][1] < errors["default"][1], errors
