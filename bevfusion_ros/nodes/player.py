"""Bag player: publishes a rosbag2 bag through rclpy with the recorded timing and ``/clock``.

    bevfusion-ros play BAG [--rate R] [--loop] [--topics T ...] [--delay S] [--wait-for T ...]
    player_node BAG [same options] [--ros-args ...]

``ros2 bag play`` is not available from PyPI; this is the replacement the demo, the replay evaluation and
the tests use. Messages are read with rosbags and published as the recorded CDR bytes
(``publisher.publish(bytes)``), so any message type the environment has a Python class for can be played
without deserializing it. Messages whose type the environment lacks are skipped and counted per type.

Timing: message ``i`` is published at ``t_wall_start + (t_i - t_first) / rate``; ``/clock``
(rosgraph_msgs/Clock) carries the bag time, published before each message and every ``1 / clock_hz`` s
while waiting. Publishers are RELIABLE (a best-effort publisher never connects to a reliable subscriber);
``/tf_static`` and any topic the bag recorded as transient-local are published transient-local, so late
joiners get the static transforms.

Importable: :func:`play_bag` drives the same code in-process (with a caller's node) or stand-alone.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bevfusion_ros.errors import UserError


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)        # topic -> messages published
    skipped_unknown: dict[str, int] = field(default_factory=dict)  # message type -> messages skipped
    failed: dict[str, int] = field(default_factory=dict)           # topic -> publish errors
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    interrupted: bool = False

    @property
    def total_published(self) -> int:
        return sum(self.published.values())

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped_unknown.values()) + sum(self.failed.values())

    def summary(self) -> str:
        lines = [f"published {self.total_published} messages in {self.wall_s:.2f} s "
                 f"({self.loops} pass{'es' if self.loops != 1 else ''} over {self.bag_s:.2f} s of bag time)"]
        lines += [f"  {topic:40s} {count}" for topic, count in sorted(self.published.items())]
        for type_name, count in sorted(self.skipped_unknown.items()):
            lines.append(f"  skipped {count} message(s) of unknown type {type_name}")
        for topic, count in sorted(self.failed.items()):
            lines.append(f"  {count} message(s) on {topic} failed to publish")
        return "\n".join(lines)


def _is_transient_local(connection: Any) -> bool:
    profiles = getattr(getattr(connection, "ext", None), "offered_qos_profiles", None) or []
    return any(getattr(getattr(profile, "durability", None), "name", "") == "TRANSIENT_LOCAL" for profile in profiles)


def open_bag(path: str | Path):
    """An opened rosbags Reader for ``path``; UserError for a missing or unreadable bag."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise UserError(f"bag {str(path)!r} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as err:  # noqa: BLE001 - rosbags raises several error types for bad bags
        raise UserError(f"bag {str(path)!r} could not be opened: {err}") from None
    return reader


def play_bag(path: str | Path, rate: float = 1.0, loop: bool = False, node: Any = None,
             topics: Sequence[str] | None = None, clock: bool = True, clock_hz: float = 100.0,
             start_delay_s: float = 0.0, wait_for: Sequence[str] = (), wait_timeout_s: float = 10.0,
             stop_event: threading.Event | None = None, max_loops: int | None = None,
             on_published: Callable[[str, int], None] | None = None, log: Callable[[str], None] | None = None
             ) -> PlayStats:
    """Publish the bag at ``path`` through rclpy; returns :class:`PlayStats`.

    node: publish through this rclpy node (the caller spins whatever else it needs); ``None`` creates a
        context and a node ``bevfusion_player`` for the duration of the call.
    rate: playback speed factor (> 0). loop: start over at the end until ``stop_event`` is set (or
        ``max_loops`` passes). topics: only these topics (default all).
    start_delay_s: wait after creating the publishers (discovery). wait_for: topics whose publishers must
        have at least one matched subscription before playback starts (up to ``wait_timeout_s``).
    on_published(topic, bag_time_ns): called after each publish (tests, replay evaluation).
    """
    if not rate > 0:
        raise UserError(f"--rate must be positive, got {rate}")
    reader = open_bag(path)
    own_context = None
    try:
        import rclpy

        if node is None:
            own_context = rclpy.Context()
            rclpy.init(context=own_context)
            node = rclpy.create_node("bevfusion_player", context=own_context)
        return _play(reader, node, rate, loop, topics, clock, clock_hz, start_delay_s, wait_for, wait_timeout_s,
                     stop_event or threading.Event(), max_loops, on_published, log)
    finally:
        reader.close()
        if own_context is not None:
            node.destroy_node()
            rclpy.shutdown(context=own_context)


def _play(reader, node, rate, loop, topics, clock, clock_hz, start_delay_s, wait_for, wait_timeout_s, stop_event,
          max_loops, on_published, log) -> PlayStats:
    from rosgraph_msgs.msg import Clock

    from bevfusion_ros.ros.qos import CLOCK_QOS, TF_STATIC_LISTENER_QOS, player_qos
    from bevfusion_ros.ros.types import UnknownMessageType, msg_class, normalize_type_name

    stats = PlayStats()
    wanted = set(topics) if topics else None
    publishers: dict[int, Any] = {}
    by_topic: dict[str, Any] = {}
    for connection in reader.connections:
        if wanted is not None and connection.topic not in wanted:
            continue
        try:
            cls = msg_class(normalize_type_name(connection.msgtype))
        except UnknownMessageType:
            stats.skipped_unknown.setdefault(connection.msgtype, 0)
            continue
        if connection.topic not in by_topic:
            qos = TF_STATIC_LISTENER_QOS if _is_transient_local(connection) else player_qos(connection.topic)
            by_topic[connection.topic] = node.create_publisher(cls, connection.topic, qos)
        publishers[connection.id] = by_topic[connection.topic]
    clock_publisher = node.create_publisher(Clock, "/clock", CLOCK_QOS) if clock else None
    selected = [c for c in reader.connections if wanted is None or c.topic in wanted]

    if start_delay_s > 0:
        stop_event.wait(start_delay_s)
    deadline = time.monotonic() + wait_timeout_s
    for topic in wait_for:
        publisher = by_topic.get(topic)
        if publisher is None:
            raise UserError(f"--wait-for topic {topic!r} is not played from this bag")
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not stop_event.is_set():
            time.sleep(0.01)

    clock_msg = Clock()
    clock_period = 1.0 / clock_hz if clock_hz > 0 else None

    def publish_clock(bag_ns: int) -> None:
        if clock_publisher is not None:
            clock_msg.clock.sec, clock_msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
            clock_publisher.publish(clock_msg)

    wall_begin = time.monotonic()
    try:
        while not stop_event.is_set():
            wall_start = time.monotonic()
            first_ns = None
            last_ns = None
            for connection, stamp_ns, data in reader.messages(connections=selected):
                if stop_event.is_set():
                    break
                if connection.id not in publishers:
                    stats.skipped_unknown[connection.msgtype] = stats.skipped_unknown.get(connection.msgtype, 0) + 1
                    continue
                if first_ns is None:
                    first_ns = stamp_ns
                last_ns = stamp_ns
                target = wall_start + (stamp_ns - first_ns) / 1e9 / rate
                while True:
                    remaining = target - time.monotonic()
                    if remaining <= 0 or stop_event.is_set():
                        break
                    step = remaining if clock_period is None or clock_publisher is None else min(remaining, clock_period)
                    time.sleep(step)
                    if clock_publisher is not None and target - time.monotonic() > 0:
                        elapsed = (time.monotonic() - wall_start) * rate
                        publish_clock(first_ns + int(elapsed * 1e9))
                publish_clock(stamp_ns)
                try:
                    publishers[connection.id].publish(bytes(data))
                except Exception as err:  # noqa: BLE001 - count and go on, as the issue demands
                    stats.failed[connection.topic] = stats.failed.get(connection.topic, 0) + 1
                    if log is not None:
                        log(f"publishing on {connection.topic} failed: {err}")
                    continue
                stats.published[connection.topic] = stats.published.get(connection.topic, 0) + 1
                if on_published is not None:
                    on_published(connection.topic, stamp_ns)
            stats.loops += 1
            if first_ns is not None and last_ns is not None:
                stats.bag_s += (last_ns - first_ns) / 1e9
            if not loop or (max_loops is not None and stats.loops >= max_loops) or first_ns is None:
                break
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.interrupted = stats.interrupted or stop_event.is_set()
    stats.wall_s = time.monotonic() - wall_begin
    if not stats.interrupted:
        # Reliable subscribers may still be receiving the last messages (a large PointCloud2 takes a few
        # ms): wait for their acknowledgements, within one shared 2 s budget, before the publishers go away,
        # so a scene's final sweep is not lost.
        from rclpy.duration import Duration
        ack_deadline = time.monotonic() + 2.0
        for publisher in set(by_topic.values()):
            remaining = ack_deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))
            except Exception:  # noqa: BLE001 - best effort: the messages were already published
                break
    for publisher in set(by_topic.values()):
        node.destroy_publisher(publisher)
    if clock_publisher is not None:
        node.destroy_publisher(clock_publisher)
    return stats


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 folder (MCAP or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="start over at the end until interrupted")
    parser.add_argument("--topics", nargs="+", default=None, help="play only these topics")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate while waiting (default 100)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds to wait before playing (discovery)")
    parser.add_argument("--wait-for", nargs="+", default=[], metavar="TOPIC",
                        help="wait until these topics have a subscriber before playing")


def run(args: argparse.Namespace, ros_args: list[str] | None = None) -> int:
    import rclpy

    context = rclpy.Context()
    from bevfusion_ros.launch_graph import use_node_environment
    use_node_environment()   # the graph's DDS profile: large messages need its shared memory
    rclpy.init(args=ros_args, context=context)
    node = rclpy.create_node("bevfusion_player", context=context)
    try:
        stats = play_bag(args.bag, rate=args.rate, loop=args.loop, node=node, topics=args.topics,
                         clock=not args.no_clock, clock_hz=args.clock_hz, start_delay_s=args.delay,
                         wait_for=args.wait_for, log=lambda line: node.get_logger().warning(line))
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    print(stats.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console script ``player_node``: the same options, plus ``--ros-args`` (remapping, parameters)."""
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else ["player_node", *argv])
    parser = argparse.ArgumentParser(prog="player_node", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    try:
        return run(args, ros_args=argv)
    except UserError as err:
        print(f"player_node: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
