"""Running the perception graph on a bag and recording what it publishes (for ``bevfusion-ros replay-eval``).

- :class:`Recorder`: an rclpy node in the evaluating process that records ``~/detections``, ``~/map/<class>``
  and ``~/frame_status`` of the perception node, keyed by LiDAR stamp.
- :func:`replay_scene`: start the graph from the launch description, play one bag into it (the player in
  its own process at ``rate``, or :func:`play_lockstep`), wait for every sweep's status, stop the graph.
- :func:`soak`: loop a bag at a rate for a while and measure that the node stays bounded.

Scoring what was recorded is ``bevfusion_ros.eval.replay``'s job.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from bevfusion_ros.classes import CAMERA_NAMES, MAP_CLASSES
from bevfusion_ros.errors import UserError
from bevfusion_ros.paths import share_dir

NODE = "perception"
# The player starts once the node subscribes to all of these: a sweep whose /tf_static (or camera) has not
# reached the node yet would otherwise be dropped as unknown_frame (measured: 47 of 302 sweeps in the demo).
OUTPUT_MATCH_SETTLE_S = 1.0     # after the recorder matched the node's outputs, before the first sweep
WAIT_FOR_TOPICS = ("/LIDAR_TOP", "/tf_static", "/tf",
                   *(f"/{camera}/{suffix}" for camera in CAMERA_NAMES
                     for suffix in ("image_rect_compressed", "camera_info")))


# ----------------------------------------------------------------------------- recording


@dataclass
class SceneRecord:
    """What the node published for one scene, keyed by LiDAR stamp (us)."""

    statuses: dict[int, dict] = field(default_factory=dict)
    detections: dict = field(default_factory=dict)       # stamp -> Detections (every sweep: a keyframe's
                                                         # newest output may come from a sweep before it)
    maps: dict[int, dict[str, tuple]] = field(default_factory=lambda: defaultdict(dict))
    memory_mb: list[tuple[float, float]] = field(default_factory=list)   # (t since start, RSS MB)
    play_summary: str = ""


class Recorder:
    """An rclpy node in this process that records the perception node's outputs."""

    def __init__(self, keyframe_stamps: set[int], namespace: str = ""):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from nav_msgs.msg import OccupancyGrid
        from std_msgs.msg import String

        from bevfusion_ros.nodes.perception import STATUS_QOS
        from bevfusion_ros.ros.qos import OUTPUT_QOS

        self.keyframes = keyframe_stamps
        self.record = SceneRecord()
        self.lock = threading.Lock()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("replay_recorder", context=self.context)
        prefix = f"{namespace.rstrip('/')}/{NODE}"
        try:
            from bevfusion_msgs.msg import DetectedObjects3D
        except ImportError as err:
            raise UserError(f"bevfusion_msgs is not built ({err}); run make setup") from None
        self.subscriptions = [
            self.node.create_subscription(DetectedObjects3D, f"{prefix}/detections", self._on_detections,
                                          OUTPUT_QOS),
            self.node.create_subscription(String, f"{prefix}/frame_status", self._on_status, STATUS_QOS)]
        for name in MAP_CLASSES:
            self.subscriptions.append(self.node.create_subscription(
                OccupancyGrid, f"{prefix}/map/{name}", lambda m, n=name: self._on_map(n, m), OUTPUT_QOS))
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_detections(self, msg) -> None:
        from bevfusion_ros.ros.outputs import detections_from_objects_msg
        from bevfusion_ros.ros.time import header_to_us

        det = detections_from_objects_msg(msg)
        with self.lock:
            self.record.detections[header_to_us(msg.header)] = det

    def _on_status(self, msg) -> None:
        status = json.loads(msg.data)
        with self.lock:
            previous = self.record.statuses.get(status["stamp_us"])
            if previous is None or previous.get("status") != "processed":
                self.record.statuses[status["stamp_us"]] = status

    def _on_map(self, name: str, msg) -> None:
        from bevfusion_ros.ros.time import header_to_us

        stamp = header_to_us(msg.header)
        if stamp in self.keyframes:
            info = msg.info
            grid = np.frombuffer(bytes(np.asarray(msg.data, np.int8).tobytes()), np.int8)
            with self.lock:
                self.record.maps[stamp][name] = (grid.reshape(info.height, info.width).copy(), float(info.resolution),
                                                 float(info.origin.position.x), float(info.origin.position.y))

    def has_perception_node(self) -> bool:
        """Every recorded output of the node is matched to this recorder's subscription. (Matched on the
        reader's side; the node's writers match the readers on their own schedule, hence the settle time
        before playing, ``OUTPUT_MATCH_SETTLE_S``.) Graph discovery alone was not enough: in 2 of ~17 demo
        replays the first sweep got no status (its keyframe reported as "no frame_status received"), most
        likely published before the node's writers knew the recorder; the node logged nothing for it."""
        return all(sub.get_publisher_count() > 0 for sub in self.subscriptions)

    def close(self) -> None:
        import rclpy
        # the spinning thread leaves before the node goes: a callback still running on a node being destroyed
        # fails ("cannot use Destroyable because destruction was requested") in a task nobody reads
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(2.0)


def _own_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc/*/stat parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and its descendants (the perception node's model runs in a child)."""
    own = _own_rss_mb(pid)
    if own is None:
        return None
    return own + sum(v for v in map(_own_rss_mb, descendants(pid)) if v is not None)


def write_params(out_dir: Path, overrides: dict, base: Path | None = None) -> Path:
    """config/perception.yaml (or ``base``) with ``overrides`` applied -> out_dir/perception_params.yaml."""
    base = base or share_dir() / "config" / "perception.yaml"
    data = yaml.safe_load(base.read_text()) or {}
    section = data.setdefault("/**", {}).setdefault("ros__parameters", {})
    section.update({k: v for k, v in overrides.items() if v is not None})
    path = out_dir / "perception_params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def play_lockstep(bag: Path, context, has_status, frame_timeout_s: float = 60.0, ack_timeout_s: float = 5.0,
                  topics: set[str] | None = None) -> str:
    """Play ``bag`` as fast as the node keeps up, deterministically: before each LiDAR message every message
    published so far is acknowledged by its (reliable) subscribers, and after it the node's frame_status for
    that sweep is awaited. Every sweep is processed with exactly the inputs the dataset pairs with it
    (accuracy independent of speed; latencies are then not real-time numbers).

    ``context``: an initialized rclpy Context (its participant publishes); ``has_status(stamp_us)``: whether
    the node has reported on that sweep."""
    import rclpy
    from rclpy.duration import Duration

    from bevfusion_ros.nodes.player import open_bag
    from bevfusion_ros.ros.qos import player_qos
    from bevfusion_ros.ros.time import ns_to_us
    from bevfusion_ros.ros.types import UnknownMessageType, msg_class, normalize_type_name

    node = rclpy.create_node("replay_lockstep_player", context=context)
    reader = open_bag(bag)
    published: dict[str, int] = defaultdict(int)
    try:
        publishers = {}
        for connection in reader.connections:
            if topics is not None and connection.topic not in topics:
                continue
            try:
                cls = msg_class(normalize_type_name(connection.msgtype))
            except UnknownMessageType:
                continue
            if connection.topic not in publishers:
                publishers[connection.topic] = node.create_publisher(cls, connection.topic,
                                                                     player_qos(connection.topic))
        lidar = publishers.get("/LIDAR_TOP")
        if lidar is None:
            raise UserError(f"bag {bag} has no /LIDAR_TOP messages")
        deadline = time.monotonic() + 30.0
        while lidar.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)       # let every other subscription of the node match too
        for connection, stamp_ns, raw in reader.messages():
            publisher = publishers.get(connection.topic)
            if publisher is None:
                continue
            if publisher is lidar:
                for other in publishers.values():
                    other.wait_for_all_acked(Duration(seconds=ack_timeout_s))
            publisher.publish(bytes(raw))
            published[connection.topic] += 1
            if publisher is lidar:
                stamp = ns_to_us(stamp_ns)
                end = time.monotonic() + frame_timeout_s
                while time.monotonic() < end and not has_status(stamp):
                    time.sleep(0.002)
    finally:
        reader.close()
        node.destroy_node()
    return "lockstep: " + ", ".join(f"{topic} {count}" for topic, count in sorted(published.items()))


def deliver_tf_static(bag: Path, recorder: "Recorder", timeout_s: float = 10.0):
    """Publish the bag's /tf_static (transient local) and wait until the node has acknowledged it, before
    the player starts: the player's own first /tf_static sample was seen to arrive seconds late (a lost
    first sample waits for a retransmission), and every sweep until then is dropped as unknown_frame
    (measured: 47 and 100 of 302 sweeps in two demo runs). Returns the publisher (keep it alive)."""
    from rclpy.duration import Duration

    from bevfusion_ros.nodes.player import open_bag
    from bevfusion_ros.ros.qos import TF_STATIC_PUBLISHER_QOS
    from bevfusion_ros.ros.types import msg_class, normalize_type_name

    reader = open_bag(bag)
    try:
        statics = [(c, raw) for c, _t, raw in reader.messages() if c.topic == "/tf_static"]
    finally:
        reader.close()
    if not statics:
        return None
    publisher = recorder.node.create_publisher(msg_class(normalize_type_name(statics[0][0].msgtype)), "/tf_static",
                                               TF_STATIC_PUBLISHER_QOS)
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _connection, raw in statics:
        publisher.publish(bytes(raw))
    publisher.wait_for_all_acked(Duration(seconds=timeout_s))
    return publisher


def replay_scene(bag: Path, params_file: Path, keyframe_stamps: set[int], all_lidar_stamps: list[int],
                 rate: float, log_dir: Path, calibration: bool = False, settle_s: float = 10.0,
                 ready_timeout_s: float = 120.0, env: dict | None = None, lockstep: bool = False) -> SceneRecord:
    """Start the graph, play ``bag`` into it (at ``rate``, or in lockstep with the node), wait for every
    sweep's frame_status, stop the graph."""
    from bevfusion_ros.launch_graph import start_graph

    recorder = Recorder(keyframe_stamps)
    graph = start_graph("perception", {"params_file": str(params_file), "calibration": str(calibration).lower()},
                        env=env, log_dir=log_dir)
    pid = graph.pid(NODE)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not recorder.has_perception_node():
            if graph.exited():
                raise UserError(f"the perception node exited during start-up:\n{graph.tail(NODE)}")
            if time.monotonic() > deadline:
                raise UserError(f"the perception node did not come up in {ready_timeout_s:.0f} s:\n{graph.tail(NODE)}")
            time.sleep(0.1)
        time.sleep(OUTPUT_MATCH_SETTLE_S)
        static_publisher = None if lockstep else deliver_tf_static(bag, recorder)
        start = time.monotonic()
        stop_sampling = threading.Event()

        def sample_memory():
            while not stop_sampling.is_set():
                value = rss_mb(pid)
                if value is not None:
                    recorder.record.memory_mb.append((time.monotonic() - start, value))
                stop_sampling.wait(0.5)
        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        if lockstep:
            def has_status(stamp: int) -> bool:
                with recorder.lock:
                    return stamp in recorder.record.statuses
            recorder.record.play_summary = play_lockstep(bag, recorder.context, has_status)
        else:   # the player in its own process, as a recorded sensor stream would arrive
            player = subprocess.run(
                [sys.executable, "-m", "bevfusion_ros.nodes.player", str(bag), "--rate", str(rate),
                 "--wait-for", *WAIT_FOR_TOPICS, "--delay", "0.5"],
                env={**os.environ, **(env or {})}, capture_output=True, text=True)
            if player.returncode != 0:
                raise UserError(f"playing {bag} failed ({player.returncode}): {player.stderr.strip()[-800:]}")
            recorder.record.play_summary = player.stdout.strip()
        wanted = set(all_lidar_stamps)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with recorder.lock:
                done = wanted <= set(recorder.record.statuses)
                kf_done = all(s in recorder.record.detections or recorder.record.statuses.get(s, {}).get("status")
                              != "processed" for s in keyframe_stamps)
            if done and kf_done:
                break
            time.sleep(0.1)
        time.sleep(0.3)            # let the last maps arrive
        stop_sampling.set()
        sampler.join(2.0)
    finally:
        codes = graph.stop()
        recorder.close()
    if codes.get(NODE) not in (0, None, -2, 130) and codes.get(NODE) is not None:
        # the node must survive the whole replay; a crash is a finding, reported with its log
        recorder.record.play_summary += f"\nperception node exit status {codes[NODE]}:\n{graph.tail(NODE)}"
    return recorder.record


# ----------------------------------------------------------------------------- soak (boundedness)


def soak(bag: Path, params_file: Path, rate: float, seconds: float, out_dir: Path, warmup_s: float = 10.0) -> dict:
    """Play ``bag`` in a loop at ``rate`` for ``seconds`` into the graph and measure that the node stays
    bounded: RSS over time (growth = median of the last 10 s vs median of the 10 s after ``warmup_s``),
    end-to-end latency percentiles, processed / dropped counts. Each loop restarts the bag's clock, which
    the node handles as a time jump (history cleared, counted)."""
    import rclpy
    from std_msgs.msg import String

    from bevfusion_ros.eval.report import latency_stats
    from bevfusion_ros.launch_graph import graph_environment, start_graph
    from bevfusion_ros.nodes.perception import STATUS_QOS

    statuses: list[dict] = []
    lock = threading.Lock()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("soak_recorder", context=context)

    def on_status(msg):
        with lock:
            statuses.append(json.loads(msg.data))
    subscription = node.create_subscription(String, f"/{NODE}/frame_status", on_status, STATUS_QOS)
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    graph = start_graph("perception", {"params_file": str(params_file), "calibration": "false"},
                        log_dir=out_dir / "logs" / "soak")
    memory: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 180
        while subscription.get_publisher_count() == 0:       # matched, as Recorder.has_perception_node
            if graph.exited() or time.monotonic() > deadline:
                raise UserError(f"the perception node did not come up:\n{graph.tail(NODE)}")
            time.sleep(0.1)
        time.sleep(OUTPUT_MATCH_SETTLE_S)
        player = subprocess.Popen([sys.executable, "-m", "bevfusion_ros.nodes.player", str(bag), "--rate", str(rate),
                                   "--loop", "--wait-for", *WAIT_FOR_TOPICS, "--delay", "0.5"],
                                  env=graph_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        pid = graph.pid(NODE)
        while time.monotonic() - start < seconds:
            value = rss_mb(pid)
            if value is not None:
                memory.append((time.monotonic() - start, value))
            if graph.exited():
                break
            time.sleep(0.5)
        player.send_signal(2)
        try:
            player.wait(10)
        except subprocess.TimeoutExpired:
            player.kill()
        time.sleep(2.0)
        crashed = bool(graph.exited())
    finally:
        graph.stop()
        executor.shutdown(timeout_sec=2.0)
        spinner.join(2.0)                  # before the node goes (Recorder.close)
        node.destroy_node()
        rclpy.shutdown(context=context)
        # the spin thread must be gone before the interpreter exits: a daemon thread torn down inside the
        # executor's C++ wait aborts the whole process ("terminate called without an active exception",
        # exit status 134) after the report is written
        spinner.join(2.0)
    with lock:
        done = list(statuses)
    processed = [s for s in done if s["status"] == "processed"]
    early = [m for t, m in memory if warmup_s <= t < warmup_s + 10]
    late = [m for t, m in memory if t >= seconds - 10]
    growth = (float(np.median(late)) / float(np.median(early)) - 1.0) if early and late else None
    reasons = defaultdict(int)
    for st in done:
        if st["status"] != "processed":
            reasons[f"{st['status']}:{st.get('reason', '')}"] += 1
    result = {"rate": rate, "seconds": seconds, "sweeps_reported": len(done), "processed": len(processed),
              "dropped": len(done) - len(processed), "drop_reasons": dict(reasons),
              "latency_ms": latency_stats([s["latency_ms"]["end_to_end"] for s in processed]),
              "model_ms": latency_stats([s["latency_ms"]["model"] for s in processed]),
              "memory_mb": {"after_warmup": float(np.median(early)) if early else None,
                            "end": float(np.median(late)) if late else None,
                            "max": max((m for _, m in memory), default=None)},
              "memory_growth": growth, "node_crashed": crashed,
              "memory_samples": [[round(t, 1), round(m, 1)] for t, m in memory]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2))
    return result
