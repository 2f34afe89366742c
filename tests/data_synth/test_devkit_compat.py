"""The devkit (NuScenes, NuScenesMap, DetectionEval) reads a freshly generated synthetic dataset unmodified."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from bevfusion_ros.classes import CAMERA_NAMES, CATEGORY_TO_DETECTION, DETECTION_CLASSES, LIDAR_NAME
from bevfusion_ros.data.synth.writer import TABLES


def test_all_tables_and_lidarseg_written(tiny_dataset):
    root, _ = tiny_dataset
    for table in (*TABLES, "lidarseg"):
        records = json.loads((root / "v1.0-mini" / f"{table}.json").read_text())
        assert records, table
        tokens = [r["token"] for r in records]
        assert len(set(tokens)) == len(tokens), f"duplicate tokens in {table}"


def test_devkit_loads_scenes_named_after_the_real_split(tiny_nusc):
    from nuscenes.utils.splits import create_splits_scenes
    assert [s["name"] for s in tiny_nusc.scene] == create_splits_scenes()["mini_val"][:1]
    assert len(tiny_nusc.sample) == 3
    for sample in tiny_nusc.sample:
        assert set(sample["data"]) == {*CAMERA_NAMES, LIDAR_NAME}
    # Neighbours are '' (never None), sample_data chains are consistent in time.
    for sd in tiny_nusc.sample_data:
        assert sd["prev"] is not None and sd["next"] is not None
        if sd["next"]:
            assert tiny_nusc.get("sample_data", sd["next"])["timestamp"] > sd["timestamp"]
    stamps = [s["timestamp"] for s in sorted(tiny_nusc.sample, key=lambda s: s["timestamp"])]
    assert np.all(np.diff(stamps) == 500_000)


def test_camera_keyframes_are_close_to_the_lidar_keyframe(tiny_nusc):
    for sample in tiny_nusc.sample:
        lidar_stamp = tiny_nusc.get("sample_data", sample["data"][LIDAR_NAME])["timestamp"]
        for cam in CAMERA_NAMES:
            sd = tiny_nusc.get("sample_data", sample["data"][cam])
            assert abs(sd["timestamp"] - lidar_stamp) < 50_000
            assert (sd["width"], sd["height"]) == (1600, 900)


def test_map_expansion_loads_and_rasterizes_bevfusion_layers(tiny_dataset, tiny_nusc):
    from nuscenes.map_expansion.map_api import NuScenesMap
    root, _ = tiny_dataset
    log = tiny_nusc.get("log", tiny_nusc.scene[0]["log_token"])
    nusc_map = NuScenesMap(dataroot=str(root), map_name=log["location"])
    pose = tiny_nusc.get("ego_pose", tiny_nusc.get("sample_data", tiny_nusc.sample[0]["data"][LIDAR_NAME])
                         ["ego_pose_token"])
    x, y = pose["translation"][:2]
    layers = ["drivable_area", "ped_crossing", "walkway", "stop_line", "carpark_area", "road_divider",
              "lane_divider"]
    mask = nusc_map.get_map_mask((x, y, 100.0, 100.0), 0.0, layers, (200, 200))
    assert mask.shape == (7, 200, 200)
    assert mask[0].mean() > 0.1                       # drivable area around the ego
    assert mask[0][100, 100] == 1                     # the ego stands on it
    assert mask[2].any() and (mask[5].any() or mask[6].any())
    big = nusc_map.get_map_mask((x, y, 400.0, 400.0), 0.0, layers, (400, 400))
    assert all(big[i].any() for i in range(7)), "every BEVFusion map layer appears near the ego"


def _gt_submission(nusc) -> dict:
    results = {}
    for sample in nusc.sample:
        boxes = []
        for ann_token in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = CATEGORY_TO_DETECTION.get(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue   # the evaluation drops such ground truth; submitting it would be a false positive
            velocity = nusc.box_velocity(ann_token)[:2]
            attribute = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
            boxes.append({"sample_token": sample["token"], "translation": ann["translation"], "size": ann["size"],
                          "rotation": ann["rotation"],
                          "velocity": [float(v) if np.isfinite(v) else 0.0 for v in velocity],
                          "detection_name": name, "detection_score": 1.0, "attribute_name": attribute})
        results[sample["token"]] = boxes
    return {"meta": {"use_camera": True, "use_lidar": True, "use_radar": False, "use_map": False,
                     "use_external": False}, "results": results}


def test_detection_eval_of_ground_truth_gives_map_1(tiny_nusc, tmp_path):
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from bevfusion_ros.data.nuscenes_io import eval_set_for
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_gt_submission(tiny_nusc)))
    evaluator = DetectionEval(tiny_nusc, config_factory("detection_cvpr_2019"), str(path),
                              eval_set=eval_set_for(tiny_nusc), output_dir=str(tmp_path), verbose=False)
    metrics, _ = evaluator.evaluate()
    present = Counter(box.detection_name for box in evaluator.gt_boxes.all)
    assert set(present) == set(DETECTION_CLASSES), f"classes in the evaluated ground truth: {present}"
    assert metrics.mean_ap == pytest.approx(1.0, abs=1e-6)


def test_devkit_finds_lidarseg_labels_by_sample_data_token(tiny_dataset, tiny_nusc):
    """nuScenes-lidarseg keys its records by the LIDAR_TOP sample_data token; the devkit relies on it."""
    root, _ = tiny_dataset
    for sample in tiny_nusc.sample:
        lidar_token = sample["data"][LIDAR_NAME]
        record = tiny_nusc.get("lidarseg", lidar_token)
        labels = np.fromfile(root / record["filename"], dtype=np.uint8)
        points = np.fromfile(root / tiny_nusc.get("sample_data", lidar_token)["filename"], dtype=np.float32)
        assert len(labels) * 5 == len(points)
    assert tiny_nusc.lidarseg_name2idx_mapping["vehicle.car"] == 17
    assert tiny_nusc.lidarseg_name2idx_mapping["flat.driveable_surface"] == 24
