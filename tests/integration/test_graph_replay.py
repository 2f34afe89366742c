"""End to end through real rclpy: a bag of a small scene played into the graph started from the launch
description (`bevfusion-ros launch` machinery, one process per node), and replay-eval vs an offline
evaluation of the same frames with the same model.

The scene is the bag tests' tiny nuScenes-format dataset (built in a second from the real keyframe when
present): 3 keyframes with a LiDAR sweep between them, six cameras at the keyframes. The model is the
shipped checkpoint when it exists, else the tiny config's untrained weights (the plumbing is the same).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bevfusion_msgs.msg", reason="interfaces not built (make setup)")
pytest.importorskip("tf2_msgs.msg", reason="interfaces not built (make setup)")

from bevfusion_ros.paths import REPO_ROOT, nuscenes_sample_dir  # noqa: E402
from tests.bag.tiny_dataset import build_tiny_dataset  # noqa: E402

from bevfusion_ros.launch_graph import use_node_environment  # noqa: E402

use_node_environment()      # the recorder and player in this process use the graph's transports

MODEL_CONFIG = REPO_ROOT / "models" / "bevfusion-tiny.yaml"
SHIPPED = REPO_ROOT / "models" / "bevfusion-tiny-synthetic.pt"


_UNTRAINED: list[str] = []


def checkpoint() -> str:
    """The shipped checkpoint; without it, one saved copy of the config's untrained weights, so the node
    and the offline evaluation run the very same (random) model."""
    if SHIPPED.is_file():
        return str(SHIPPED)
    if not _UNTRAINED:
        import tempfile

        import torch

        from bevfusion_ros.model.bevfusion import BEVFusion
        from bevfusion_ros.model.checkpoint import save_checkpoint
        from bevfusion_ros.model.config import load_config

        torch.manual_seed(0)
        config = load_config(MODEL_CONFIG)
        path = Path(tempfile.mkdtemp(prefix="untrained_")) / "untrained.pt"
        save_checkpoint(path, BEVFusion(config), config)
        _UNTRAINED.append(str(path))
    return _UNTRAINED[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from bevfusion_ros.data.bag_convert import convert_scene

    sample = nuscenes_sample_dir()
    root = tmp_path_factory.mktemp("integration_nuscenes")
    truth = build_tiny_dataset(root, sample if (sample / "sample.json").is_file() else None, n_keyframes=3)
    bags = tmp_path_factory.mktemp("integration_bags")
    convert_scene(truth["dataroot"], truth["version"], truth["scene"], bags / truth["scene"], progress=False)
    return truth, bags


class TopicRecorder:
    """Records every output topic of /perception (own context, own executor thread)."""

    TOPICS = ("detections", "detections_vision", "markers", "map/drivable_area", "map/divider", "frame_status")

    def __init__(self):
        import rclpy
        from bevfusion_msgs.msg import DetectedObjects3D
        from nav_msgs.msg import OccupancyGrid
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray

        from bevfusion_ros.nodes.perception import STATUS_QOS

        types = {"detections": DetectedObjects3D, "detections_vision": Detection3DArray, "markers": MarkerArray,
                 "map/drivable_area": OccupancyGrid, "map/divider": OccupancyGrid, "frame_status": String}
        self.messages = {topic: [] for topic in self.TOPICS}
        self.lock = threading.Lock()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("integration_recorder", context=self.context)
        for topic, msg_type in types.items():
            self.node.create_subscription(msg_type, f"/perception/{topic}",
                                          lambda m, t=topic: self._store(t, m), STATUS_QOS)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _store(self, topic, msg):
        with self.lock:
            self.messages[topic].append(msg)

    def statuses(self):
        with self.lock:
            return [json.loads(m.data) for m in self.messages["frame_status"]]

    def close(self):
        import rclpy
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(2.0)              # the spinning thread leaves before the node goes
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(2.0)


def test_bag_played_into_the_launched_graph_yields_detections_with_lidar_stamps_and_frames(scene, tmp_path):
    from bevfusion_ros.eval.replay import play_lockstep, write_params
    from bevfusion_ros.launch_graph import start_graph
    from bevfusion_ros.nodes.player import open_bag
    from bevfusion_ros.ros.time import header_to_us, ns_to_us

    truth, bags = scene
    bag = bags / truth["scene"]
    reader = open_bag(bag)
    lidar_stamps = [ns_to_us(t) for c, t, _ in reader.messages() if c.topic == "/LIDAR_TOP"]
    reader.close()
    params = write_params(tmp_path, {"checkpoint": checkpoint(), "reliable_sensors": True,
                                    "max_input_wait": 0.5})
    recorder = TopicRecorder()
    graph = start_graph("perception", {"params_file": str(params), "calibration": "false"}, log_dir=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while recorder.node.count_publishers("/perception/frame_status") == 0:
            assert not graph.exited(), graph.tail("perception")
            assert time.monotonic() < deadline, "perception node did not start:\n" + graph.tail("perception")
            time.sleep(0.1)

        summary = play_lockstep(bag, recorder.context,
                                lambda stamp: any(s["stamp_us"] == stamp for s in recorder.statuses()))
        assert f"/LIDAR_TOP {len(lidar_stamps)}" in summary
        time.sleep(1.0)
        assert not graph.exited(), graph.tail("perception")
    finally:
        graph.stop()
        recorder.close()
    statuses = {s["stamp_us"]: s for s in recorder.statuses()}
    assert sorted(statuses) == sorted(lidar_stamps)
    assert all(s["status"] == "processed" for s in statuses.values()), statuses
    for topic in ("detections", "detections_vision", "map/drivable_area", "map/divider"):
        stamps = sorted(header_to_us(m.header) for m in recorder.messages[topic])
        assert stamps == sorted(lidar_stamps), topic
        assert {m.header.frame_id for m in recorder.messages[topic]} == {"LIDAR_TOP"}, topic
    markers = recorder.messages["markers"]
    assert len(markers) == len(lidar_stamps) and all(m.markers[0].action == 3 for m in markers)   # DELETEALL
    # keyframes carry all six cameras; the sweeps between them have none within the delay
    keyframe_stamps = {k["stamp"] for k in truth["keyframes"]}
    for stamp, status in statuses.items():
        assert (status["masked"] == []) == (stamp in keyframe_stamps), (stamp, status["notes"])


def test_replay_eval_report_is_complete_and_matches_an_offline_eval_of_the_same_frames(scene, tmp_path):
    from bevfusion_ros.eval.offline import evaluate
    from bevfusion_ros.eval.replay import replay_eval

    truth, bags = scene
    out = tmp_path / "replay"
    report = replay_eval(truth["dataroot"], truth["version"], [truth["scene"]], out=out, bags=bags,
                         checkpoint=checkpoint(), lockstep=True, backend="torch",     # as offline below
                         params={"camera_ego_motion": True, "image_decode_reduction": 1,   # same inputs
                                 "map_fusion": False})     # the node fuses every sweep, offline keyframes

    on_disk = json.loads((out / "report.json").read_text())
    for key in ("map", "nds", "mapseg_miou", "latency_ms", "keyframes_total", "keyframes_evaluated", "dropped",
                "masked_camera_frames", "backend", "rate"):
        assert key in on_disk, key
    assert set(on_disk["latency_ms"]) >= {"p50", "p90", "p99"}
    assert on_disk["keyframes_total"] == 3 and on_disk["keyframes_evaluated"] == 3 and on_disk["dropped"] == []
    assert (out / "report.md").is_file() and (out / "latency_histogram.png").is_file()
    assert (out / "bev_keyframe.png").is_file() and (out / "submission.json").is_file()
    # every keyframe has its own output in lockstep: the three ways of scoring detection agree
    assert on_disk["detection_evaluated_keyframes"]["map"] == pytest.approx(on_disk["map"])
    held = on_disk["detection_latest_output"]
    assert held["keyframes_with_output"] == 3 and held["age_ms_max"] == 0
    assert held["map"] == pytest.approx(on_disk["map"]) and held["nds"] == pytest.approx(on_disk["nds"])

    # offline: `bevfusion-ros eval` on the same dataset with the same model (frames from frame_from_sample)
    offline = evaluate(str(MODEL_CONFIG), checkpoint(), truth["dataroot"], tmp_path / "offline",
                       version=truth["version"], figures=0, quiet=True, map_fusion=False, log=lambda line: None)
    assert offline["eval_set"] == report["eval_set"]
    assert abs(report["map"] - offline["map"]) <= 0.01
    assert abs(report["nds"] - offline["nds"]) <= 0.01
    if offline["mapseg_miou"] is not None:     # the node publishes maps as percent: 1% quantization
        assert abs(report["mapseg_miou"] - offline["mapseg_miou"]) <= 0.02
    path = tmp_path / "offline" / "submission.json"
    # and box for box: the replayed submission equals the offline one
    replayed = json.loads((out / "submission.json").read_text())["results"]
    offline_boxes = json.loads(path.read_text())["results"]
    for token, boxes in offline_boxes.items():
        assert len(replayed[token]) == len(boxes), token
        if boxes:
            np.testing.assert_allclose([b["translation"] for b in replayed[token]],
                                       [b["translation"] for b in boxes], atol=0.05)


def test_soak_cli_reports_and_exits_cleanly(scene, tmp_path):
    """`replay-eval --soak` loops the bag at 4x into the graph and writes soak.json; the command's own exit
    status is 0 (its recorder's spin thread used to outlive the interpreter and abort it, status 134,
    after the report was written)."""
    import subprocess
    import sys

    truth, bags = scene
    out = tmp_path / "soak"
    run = subprocess.run([sys.executable, "-m", "bevfusion_ros.cli", "replay-eval", "--dataroot", truth["dataroot"],
                          "--version", truth["version"], "--scenes", truth["scene"], "--bags", str(bags),
                          "--out", str(out), "--checkpoint", checkpoint(), "--soak", "3", "--rate", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "terminate called" not in run.stderr
    result = json.loads((out / "soak.json").read_text())
    assert result["processed"] > 0 and not result["node_crashed"]
