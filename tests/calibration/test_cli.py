"""`bevfusion-ros calibrate-eval` and `calibrate` end to end on the real keyframe (one quick trial)."""
import json

import yaml

from bevfusion_ros.cli import main


def _tiny_config(tmp_path, fast_config):
    cfg = fast_config().to_dict()
    for key in ("mode", "rot_range_deg", "trans_range_m", "threads"):
        cfg.pop(key)
    cfg["search"] = [dict(samples=256, scale=1.0, level=0, max_points=48, keep=2),
                     dict(samples=16, scale=0.2, level=1, max_points=96, keep=1)]
    cfg["refine"] = [dict(level=2, iterations=20, lr_rot_deg=0.1, lr_trans_m=0.01)]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_calibrate_eval_writes_json_markdown_and_png(nuscenes_sample, tmp_path, fast_config):
    out = tmp_path / "eval"
    status = main(["calibrate-eval", "--sample-json", str(nuscenes_sample / "sample.json"), "--out", str(out),
                   "--trials", "1", "--rot-deg", "2", "--trans-m", "0.1", "--threads", "1",
                   "--config", str(_tiny_config(tmp_path, fast_config))])
    assert status == 0
    metrics = json.loads((out / "calibrate_eval.json").read_text())
    for key in ("trials", "rot_range_deg", "trans_range_m", "rot_err_deg_mean", "rot_err_deg_median",
                "trans_err_cm_mean", "trans_err_cm_median", "success_rate", "runtime_s_mean", "frames",
                "rot_err_deg_axis_mean", "trans_err_cm_axis_mean"):
        assert key in metrics, key
    assert metrics["trials"] == 1 and metrics["frames"] == 1 and metrics["rot_range_deg"] == 2.0
    assert (out / "calibrate_eval.png").stat().st_size > 10_000
    assert "| rotation error (deg) |" in (out / "calibrate_eval.md").read_text()


def test_calibrate_eval_refuses_bad_arguments(tmp_path, capsys):
    assert main(["calibrate-eval", "--sample-json", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["calibrate-eval", "--sample-json", "x", "--out", str(tmp_path), "--trials", "0"]) == 2


def test_calibrate_reports_and_writes_a_new_rig(nuscenes_sample, tmp_path, fast_config):
    from bevfusion_ros.paths import REPO_ROOT
    out = tmp_path / "new.yaml"
    report = tmp_path / "report.json"
    status = main(["calibrate", "--sample-json", str(nuscenes_sample / "sample.json"), "--calib",
                   str(REPO_ROOT / "calib" / "nuscenes.yaml"), "--mode", "rig", "--threads", "1",
                   "--config", str(_tiny_config(tmp_path, fast_config)), "--out", str(out), "--json", str(report)])
    data = json.loads(report.read_text())
    assert set(data["cameras"]) == {"CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                                    "CAM_BACK_RIGHT"}
    assert status in (0, 1) and (status == 0) == data["success"]
    assert out.exists() == data["success"]
