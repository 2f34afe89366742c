"""Submission writer (format, LiDAR->global transforms) and the devkit's DetectionEval on GT-as-predictions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bevfusion_ros.classes import DETECTION_CLASSES
from bevfusion_ros.errors import UserError
from bevfusion_ros.eval import detection as det_eval
from bevfusion_ros.frame import Detections


def _gt_detections(sample: dict) -> Detections:
    n = len(sample["labels"])
    return Detections(sample["boxes"].astype(np.float32), np.linspace(0.9, 0.5, n).astype(np.float32),
                      sample["labels"], sample["attributes"])


def test_submission_matches_devkit_global_boxes(tiny_nusc_db, tiny_nusc):
    """LiDAR-frame GT -> writer -> global boxes equal the database's own global annotations."""
    from pyquaternion import Quaternion
    for sample in tiny_nusc_db["samples"]:
        T = det_eval.lidar_to_global(sample["T_global_ego"], sample["T_ego_lidar"])
        np.testing.assert_allclose(T, det_eval.sample_lidar_to_global(tiny_nusc, sample["token"]), atol=1e-9)
        boxes = det_eval.detections_to_submission_boxes(sample["token"], _gt_detections(sample), T)
        anns = {tiny_nusc.get("sample_annotation", a)["category_name"]: tiny_nusc.get("sample_annotation", a)
                for a in tiny_nusc.get("sample", sample["token"])["anns"]}
        assert len(boxes) == len(DETECTION_CLASSES)
        for box in boxes:
            ann = next(a for a in anns.values() if tiny_nusc.get("category", tiny_nusc.get(
                "instance", a["instance_token"])["category_token"])["name"].startswith(
                {"construction_vehicle": "vehicle.construction", "traffic_cone": "movable_object.trafficcone",
                 "barrier": "movable_object.barrier", "pedestrian": "human.pedestrian"}.get(
                    box["detection_name"], "vehicle." + box["detection_name"])))
            np.testing.assert_allclose(box["translation"], ann["translation"], atol=1e-3)
            np.testing.assert_allclose(box["size"], ann["size"], atol=1e-5)
            yaw_err = abs((Quaternion(box["rotation"]).inverse * Quaternion(ann["rotation"])).degrees)
            assert min(yaw_err, 360 - yaw_err) < 2.0   # the LiDAR is tilted ~1.4 deg; yaw-only boxes
            vel = tiny_nusc.box_velocity(ann["token"])[:2]
            np.testing.assert_allclose(box["velocity"], vel, atol=0.1)
            assert box["sample_token"] == sample["token"]
            assert isinstance(box["detection_score"], float)


def test_real_sample_lidar_boxes_to_global(nuscenes_sample):
    """The real keyframe's 69 LiDAR-frame boxes go to the global frame the way the devkit's Box does."""
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion
    data = json.loads((nuscenes_sample / "sample.json").read_text())
    lidar2ego = np.array(data["lidar"]["lidar2ego"])
    ego2global = np.array(data["ego2global"])
    inst = data["instances"]
    assert len(inst) == 69
    boxes = np.array([[*i["box"], *i["velocity"]] for i in inst])
    # one box is labelled 'ignore' (no detection class): the writer drops labels outside the 10 classes
    labels = np.array([DETECTION_CLASSES.index(i["label"]) if i["label"] in DETECTION_CLASSES else -1
                       for i in inst])
    dets = Detections(boxes, np.ones(len(inst)), labels, -np.ones(len(inst), int))
    T = det_eval.lidar_to_global(ego2global, lidar2ego)
    out = det_eval.detections_to_submission_boxes(data["sample_token"], dets, T)
    assert len(out) == 68
    boxes = boxes[labels >= 0]
    # boxes near the ego in the global frame (Singapore one-north coordinates)
    centres = np.array([b["translation"] for b in out])
    assert np.all(np.linalg.norm(centres[:, :2] - ego2global[:2, 3], axis=1) < 90)
    # nuScenes stores global annotation centres in millimetres: the recovered centres land on that grid
    # (a wrong transform order or an inverted matrix would scatter them by metres)
    assert np.abs(centres * 1000 - np.round(centres * 1000)).max() < 0.1
    # independent path: the devkit's Box rotate/translate with quaternions
    for row, b in zip(boxes, out):
        box = Box(row[:3], [row[4], row[3], row[5]], Quaternion(axis=[0, 0, 1], angle=row[6]),
                  velocity=(row[7], row[8], 0.0))
        for mat in (lidar2ego, ego2global):
            u, _, vt = np.linalg.svd(mat[:3, :3])
            box.rotate(Quaternion(matrix=u @ vt))
            box.translate(mat[:3, 3])
        np.testing.assert_allclose(b["translation"], box.center, atol=1e-3)
        np.testing.assert_allclose(b["velocity"], np.nan_to_num(box.velocity[:2]), atol=0.05)  # NaN -> 0
        yaw = box.orientation.yaw_pitch_roll[0]
        assert abs(np.angle(np.exp(1j * (Quaternion(b["rotation"]).yaw_pitch_roll[0] - yaw)))) < 0.03


def test_submission_format_and_limits():
    T = np.eye(4)
    rng = np.random.default_rng(0)
    n = 600
    boxes = np.concatenate([rng.uniform(-40, 40, (n, 3)), rng.uniform(0.5, 4, (n, 3)), rng.uniform(-3, 3, (n, 3))], 1)
    boxes[0, 0] = np.nan          # dropped: non-finite
    boxes[1, 3] = 0.0             # dropped: zero size
    labels = rng.integers(0, 10, n)
    labels[2] = 10                # dropped: unknown class
    scores = rng.uniform(0, 1, n)
    dets = Detections(boxes, scores, labels, np.full(n, -1))
    sub = det_eval.build_submission(["a", "b", "c"], {"a": dets, "b": Detections.empty()}, {"a": T},
                                    meta=det_eval.default_meta("lidar"))
    assert set(sub) == {"meta", "results"}
    assert sub["meta"] == {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                           "use_external": False}
    assert list(sub["results"]) == ["a", "b", "c"] and sub["results"]["b"] == [] and sub["results"]["c"] == []
    rows = sub["results"]["a"]
    assert len(rows) == 500
    kept = np.sort(np.array([r["detection_score"] for r in rows]))[::-1]
    valid = np.ones(n, bool)
    valid[:3] = False
    np.testing.assert_allclose(kept, np.sort(scores[valid])[::-1][:500])
    for r in rows:
        assert set(r) == {"sample_token", "translation", "size", "rotation", "velocity", "detection_name",
                          "detection_score", "attribute_name"}
        assert r["detection_name"] in DETECTION_CLASSES
        if r["detection_name"] in ("traffic_cone", "barrier"):
            assert r["attribute_name"] == ""
        else:
            assert r["attribute_name"] in det_eval.CLASS_ATTRIBUTES[r["detection_name"]]
    json.dumps(sub)  # JSON-safe
    with pytest.raises(ValueError, match="not in the eval set"):
        det_eval.build_submission(["a"], {"zz": dets}, {"zz": T})


def test_attribute_names():
    from bevfusion_ros.classes import ATTRIBUTES
    assert det_eval.attribute_name_for("car", ATTRIBUTES.index("vehicle.stopped")) == "vehicle.stopped"
    assert det_eval.attribute_name_for("car", ATTRIBUTES.index("pedestrian.moving")) == "vehicle.parked"
    assert det_eval.attribute_name_for("car", -1, speed=5.0) == "vehicle.moving"
    assert det_eval.attribute_name_for("barrier", 0) == ""
    assert det_eval.attribute_name_for("bicycle", -1) == "cycle.without_rider"


def test_detection_eval_on_gt_is_perfect(tiny_nusc_db, tiny_nusc, tmp_path):
    samples = tiny_nusc_db["samples"]
    tokens = det_eval.eval_sample_tokens(tiny_nusc, "mini_val")
    assert tokens == [s["token"] for s in samples]
    dets = {s["token"]: _gt_detections(s) for s in samples}
    dets.pop(samples[-1]["token"])   # one sample without predictions: must still be listed (empty)
    sub = det_eval.build_submission(tokens, dets, {s["token"]: det_eval.lidar_to_global(
        s["T_global_ego"], s["T_ego_lidar"]) for s in samples})
    assert sub["results"][samples[-1]["token"]] == []
    path = det_eval.write_submission(tmp_path / "results_nusc.json", sub)
    # on all but the last sample: precision 1, recall 2/3 -> AP = (2/3 - 0.1) / 0.9
    metrics = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "det")
    assert metrics["map"] == pytest.approx((2 / 3 - 0.1) / 0.9, abs=0.02)
    dets[samples[-1]["token"]] = _gt_detections(samples[-1])
    sub = det_eval.build_submission(tokens, dets, {s["token"]: det_eval.lidar_to_global(
        s["T_global_ego"], s["T_ego_lidar"]) for s in samples})
    metrics = det_eval.evaluate_submission(tiny_nusc, det_eval.write_submission(tmp_path / "r2.json", sub),
                                           "mini_val", tmp_path / "det2")
    assert metrics["map"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in metrics["per_class_ap"].values())
    assert metrics["tp_errors"]["trans_err"] < 0.01
    assert metrics["tp_errors"]["scale_err"] < 0.01
    assert metrics["tp_errors"]["orient_err"] < 0.05
    assert metrics["tp_errors"]["vel_err"] < 0.1
    assert metrics["tp_errors"]["attr_err"] == pytest.approx(0.0)
    assert metrics["nds"] > 0.98
    assert metrics["gt_classes"] == list(DETECTION_CLASSES)
    json.dumps(metrics)


def test_empty_submission_gives_zero_metrics(tiny_nusc, tmp_path):
    tokens = det_eval.eval_sample_tokens(tiny_nusc, "mini_val")
    path = det_eval.write_submission(tmp_path / "empty.json", det_eval.build_submission(tokens, {}, {}))
    metrics = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path)
    assert metrics["map"] == 0.0 and metrics["nds"] == 0.0


def test_eval_set_errors(tiny_nusc):
    with pytest.raises(UserError, match="needs a v1.0-trainval dataset"):
        det_eval.eval_sample_tokens(tiny_nusc, "val")
    with pytest.raises(UserError, match="has no scene"):
        det_eval.eval_sample_tokens(tiny_nusc, "mini_train")
    with pytest.raises(UserError, match="neither a predefined"):
        det_eval.eval_sample_tokens(tiny_nusc, "no_such_split")
    assert det_eval.infer_eval_set(tiny_nusc) == "mini_val"


def test_custom_split_eval_set(tiny_nusc_db, tmp_path):
    """A dataset whose scenes are in no predefined split is evaluated on a custom split (splits.json)."""
    import shutil
    from nuscenes import NuScenes
    root = tmp_path / "custom"
    shutil.copytree(tiny_nusc_db["dataroot"], root)
    scene_file = root / "v1.0-mini" / "scene.json"
    scenes = json.loads(scene_file.read_text())
    scenes[0]["name"] = "synthetic-0001"
    scene_file.write_text(json.dumps(scenes))
    nusc = NuScenes("v1.0-mini", str(root), verbose=False)
    with pytest.raises(UserError, match="cannot infer an eval set"):
        det_eval.infer_eval_set(nusc)
    (root / "v1.0-mini" / "splits.json").write_text(json.dumps({"train_synth": ["synthetic-9999"],
                                                                "heldout": ["synthetic-0001"]}))
    assert det_eval.infer_eval_set(nusc) == "heldout"
    tokens = det_eval.eval_sample_tokens(nusc, "heldout")
    samples = tiny_nusc_db["samples"]
    assert tokens == [s["token"] for s in samples]
    sub = det_eval.build_submission(tokens, {s["token"]: _gt_detections(s) for s in samples},
                                    {s["token"]: det_eval.lidar_to_global(s["T_global_ego"], s["T_ego_lidar"])
                                     for s in samples})
    metrics = det_eval.evaluate_submission(nusc, det_eval.write_submission(tmp_path / "r.json", sub), "heldout",
                                           tmp_path / "det")
    assert metrics["map"] == pytest.approx(1.0)


def test_scoring_a_subset_of_the_eval_set(tiny_nusc_db, tiny_nusc, tmp_path):
    # perfect predictions on all but the last sample: scoring only the others gives AP 1; scoring only the
    # last one (nothing predicted) gives zeros; a token outside the eval set is an error
    samples = tiny_nusc_db["samples"]
    tokens = det_eval.eval_sample_tokens(tiny_nusc, "mini_val")
    dets = {s["token"]: _gt_detections(s) for s in samples[:-1]}
    sub = det_eval.build_submission(tokens, dets, {s["token"]: det_eval.lidar_to_global(
        s["T_global_ego"], s["T_ego_lidar"]) for s in samples})
    path = det_eval.write_submission(tmp_path / "r.json", sub)
    scored = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "a", sample_tokens=tokens[:-1])
    assert scored["map"] == pytest.approx(1.0)
    last = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "b", sample_tokens=tokens[-1:])
    assert last["map"] == 0.0
    with pytest.raises(ValueError, match="not in the eval set"):
        det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "c", sample_tokens=["nope"])


def test_the_ground_truth_is_loaded_once_for_several_submissions_of_one_eval_set(tiny_nusc_db, tiny_nusc, tmp_path,
                                                                                 monkeypatch):
    # replay-eval scores three submissions of one eval set; on real nuScenes loading the ground truth is
    # most of each DetectionEval's set-up. Scoring a subset must not narrow what the next one sees.
    import nuscenes.eval.detection.evaluate as devkit
    samples = tiny_nusc_db["samples"]
    tokens = det_eval.eval_sample_tokens(tiny_nusc, "mini_val")
    sub = det_eval.build_submission(tokens, {s["token"]: _gt_detections(s) for s in samples[:-1]},
                                    {s["token"]: det_eval.lidar_to_global(s["T_global_ego"], s["T_ego_lidar"])
                                     for s in samples})
    path = det_eval.write_submission(tmp_path / "r.json", sub)
    monkeypatch.setattr(det_eval, "_GROUND_TRUTH", [None, None, None])
    loads = []
    real_load_gt = devkit.load_gt
    monkeypatch.setattr(devkit, "load_gt", lambda *a, **k: loads.append(1) or real_load_gt(*a, **k))
    first = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "a")
    subset = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "b", sample_tokens=tokens[:-1])
    again = det_eval.evaluate_submission(tiny_nusc, path, "mini_val", tmp_path / "c")
    assert loads == [1]
    assert subset["map"] == pytest.approx(1.0) and first["map"] < 1.0
    assert again == first
