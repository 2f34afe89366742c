"""`bevfusion-ros play`: delivers a bag's messages to rclpy subscribers in order with their stamps, keeps the
recorded timing scaled by --rate, publishes /clock, and skips (and counts) types the environment lacks."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bevfusion_ros.errors import UserError
from bevfusion_ros.nodes.player import play_bag
from bevfusion_ros.ros.pointcloud import pointcloud2_to_xyzi
from bevfusion_ros.ros.time import header_to_us


class Spinner:
    """Spins a node in a background thread (the player publishes from the test's thread)."""

    def __init__(self, node):
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join(timeout=5)


def _bag_stamps(bag: Path, topic: str) -> list[int]:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [stamp for _c, stamp, _d in reader.messages(connections=connections)]


def _wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_play_delivers_messages_in_order_with_their_stamps(ros_context, tiny_bag, tiny_dataset):
    import rclpy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, PointCloud2
    from tf2_msgs.msg import TFMessage

    from bevfusion_ros.ros.qos import SENSOR_QOS, TF_STATIC_LISTENER_QOS

    bag, _stats = tiny_bag
    listener = rclpy.create_node("play_listener", context=ros_context)
    player = rclpy.create_node("play_player", context=ros_context)
    got: dict[str, list] = {"lidar": [], "front": [], "tf": [], "static": [], "clock": []}
    listener.create_subscription(PointCloud2, "/LIDAR_TOP", got["lidar"].append, SENSOR_QOS)
    listener.create_subscription(CompressedImage, "/CAM_FRONT/image_rect_compressed", got["front"].append, 10)
    listener.create_subscription(TFMessage, "/tf", got["tf"].append, 100)
    listener.create_subscription(TFMessage, "/tf_static", got["static"].append, TF_STATIC_LISTENER_QOS)
    listener.create_subscription(Clock, "/clock", got["clock"].append, 100)
    try:
        with Spinner(listener):
            stats = play_bag(bag, rate=4.0, node=player, start_delay_s=0.2,
                             wait_for=["/LIDAR_TOP", "/CAM_FRONT/image_rect_compressed", "/tf", "/tf_static"])
            expected_lidar = _bag_stamps(bag, "/LIDAR_TOP")
            _wait_until(lambda: len(got["lidar"]) >= len(expected_lidar) and len(got["tf"]) >= stats.published["/tf"])
    finally:
        listener.destroy_node()
        player.destroy_node()

    assert stats.total_skipped == 0 and stats.loops == 1
    assert [header_to_us(m.header) * 1000 for m in got["lidar"]] == expected_lidar
    assert [header_to_us(m.header) * 1000 for m in got["front"]] == _bag_stamps(bag, "/CAM_FRONT/image_rect_compressed")
    tf_stamps = [header_to_us(m.transforms[0].header) * 1000 for m in got["tf"]]
    assert tf_stamps == _bag_stamps(bag, "/tf") and tf_stamps == sorted(tf_stamps)
    assert len(got["static"]) == 1 and len(got["static"][0].transforms) == 7
    # the points survive the trip unchanged
    records = {r["stamp"]: r for r in tiny_dataset["records"].values() if r["channel"] == "LIDAR_TOP"}
    points, _ = pointcloud2_to_xyzi(got["lidar"][-1])
    np.testing.assert_array_equal(points, records[header_to_us(got["lidar"][-1].header)]["payload"][:, :4])
    # /clock runs with the bag time, monotonically, covering the bag
    clock_ns = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for m in got["clock"]]
    assert clock_ns == sorted(clock_ns)
    assert clock_ns[0] >= _bag_stamps(bag, "/tf_static")[0] and clock_ns[-1] == _bag_stamps(bag, "/tf")[-1]


def test_rate_scales_the_recorded_timing(ros_context, tiny_bag):
    import rclpy

    bag, _ = tiny_bag
    player = rclpy.create_node("rate_player", context=ros_context)
    publish_times: list[tuple[float, int]] = []
    try:
        stats = play_bag(bag, rate=2.0, node=player, clock=False,
                         on_published=lambda topic, stamp: publish_times.append((time.monotonic(), stamp)))
    finally:
        player.destroy_node()
    wall = publish_times[-1][0] - publish_times[0][0]
    bag_span = (publish_times[-1][1] - publish_times[0][1]) / 1e9
    assert bag_span == pytest.approx(stats.bag_s)
    assert wall == pytest.approx(bag_span / 2.0, abs=0.15)
    # each message keeps its place on the rate-scaled timeline (tolerances allow a loaded 2-core machine)
    offsets = [(t - publish_times[0][0]) - (s - publish_times[0][1]) / 2e9 for t, s in publish_times]
    assert max(offsets) < 0.15 and min(offsets) > -0.05


def test_loop_replays_the_bag(ros_context, tiny_bag):
    import rclpy

    bag, stats_convert = tiny_bag
    player = rclpy.create_node("loop_player", context=ros_context)
    try:
        stats = play_bag(bag, rate=20.0, loop=True, max_loops=2, node=player, topics=["/LIDAR_TOP"])
    finally:
        player.destroy_node()
    assert stats.loops == 2 and stats.published == {"/LIDAR_TOP": 2 * stats_convert.messages["/LIDAR_TOP"]}


def _bag_with_unknown_type(path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 value\nstring note", "not_in_env_msgs/msg/Thing"))
    Thing = store.types["not_in_env_msgs/msg/Thing"]
    String = store.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        unknown = writer.add_connection("/thing", "not_in_env_msgs/msg/Thing", typestore=store)
        known = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for index in range(5):
            stamp = 1_000_000_000 + index * 10_000_000
            writer.write(unknown, stamp, store.serialize_cdr(Thing(value=index, note="x"), "not_in_env_msgs/msg/Thing"))
            writer.write(known, stamp + 1, store.serialize_cdr(String(data=f"hello {index}"), "std_msgs/msg/String"))


def test_unknown_types_are_skipped_and_counted(ros_context, tmp_path):
    import rclpy
    from std_msgs.msg import String

    bag = tmp_path / "mixed"
    _bag_with_unknown_type(bag)
    listener = rclpy.create_node("mixed_listener", context=ros_context)
    player = rclpy.create_node("mixed_player", context=ros_context)
    received: list = []
    listener.create_subscription(String, "/chatter", received.append, 10)
    try:
        with Spinner(listener):
            stats = play_bag(bag, rate=10.0, node=player, wait_for=["/chatter"])
            _wait_until(lambda: len(received) >= 5)
    finally:
        listener.destroy_node()
        player.destroy_node()
    assert stats.skipped_unknown == {"not_in_env_msgs/msg/Thing": 5}
    assert stats.published == {"/chatter": 5}
    assert [m.data for m in received] == [f"hello {i}" for i in range(5)]
    assert "skipped 5 message(s) of unknown type not_in_env_msgs/msg/Thing" in stats.summary()


def test_bad_bag_path_and_rate_are_user_errors(tmp_path, tiny_bag):
    with pytest.raises(UserError, match="does not exist"):
        play_bag(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not be opened"):
        play_bag(tmp_path / "empty")
    with pytest.raises(UserError, match="rate"):
        play_bag(tiny_bag[0], rate=0.0)


def test_player_node_console_script_plays_a_bag(tiny_bag):
    bag, stats = tiny_bag
    script = Path(sys.executable).parent / "player_node"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bevfusion_ros.nodes.player"]
    result = subprocess.run([*command, str(bag), "--rate", "10", "--delay", "0", "--ros-args", "-r",
                             "__node:=bag_player_test"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"published {stats.total} messages" in result.stdout
    bad = subprocess.run([*command, str(bag.parent / "nope")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
