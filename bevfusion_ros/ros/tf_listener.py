"""``/tf`` and ``/tf_static`` on a node and executor of their own, spun on a dedicated thread.

This is what tf2_ros's ``TransformListener(spin_thread=True)`` does: ego poses are handled on a short
wait cycle of their own, never queued behind the sensor callbacks of the node's executor (six image,
six camera_info and LiDAR handles, in Python, sharing the GIL with the model thread).

The ``/tf`` subscription is best effort (``qos.TF_LISTENER_QOS``; it matches tf2's reliable publishers).
That, not the thread, fixed what we measured in 1x replay on 2 cores: with a reliable reader a single lost
pose held back every later one until the writer's next heartbeat repaired it, so poses arrived in bursts
once a second and 51 of 66 processed sweeps went out ``input_late:tf`` + ``no_ego_pose`` (one sweep instead
of three). Best effort loses that pose, and the buffer interpolates across the gap.

The listener resolves the topic names through the owning node, so its remappings (``-r /tf:=...``) and
namespace apply unchanged.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from bevfusion_ros.ros.qos import TF_LISTENER_QOS, TF_STATIC_LISTENER_QOS


class TFListenerThread:
    """Delivers every ``TFMessage`` to ``on_tf(msg, static)`` from a thread of its own."""

    def __init__(self, owner: Node, on_tf: Callable[[Any, bool], None]):
        from tf2_msgs.msg import TFMessage

        self._on_tf = on_tf
        self.node = rclpy.create_node(f"{owner.get_name()}_tf_listener", namespace=owner.get_namespace(),
                                      context=owner.context, start_parameter_services=False,
                                      enable_rosout=False)
        self.topics = (owner.resolve_topic_name("/tf"), owner.resolve_topic_name("/tf_static"))
        self.node.create_subscription(TFMessage, self.topics[0], lambda m: self._on_tf(m, False), TF_LISTENER_QOS)
        self.node.create_subscription(TFMessage, self.topics[1], lambda m: self._on_tf(m, True),
                                      TF_STATIC_LISTENER_QOS)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="tf-listener", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us: the owner is going away
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self._thread.join(2.0)
        self.node.destroy_node()
