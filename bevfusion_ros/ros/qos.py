"""The QoS profiles of the node graph (ARCHITECTURE.md §3), defined once.

- Sensor inputs: best effort, keep last 5, volatile (``qos_profile_sensor_data``). A best-effort
  subscription matches both reliable and best-effort publishers.
- Outputs: reliable, keep last 10.
- ``/tf``: publishers reliable, keep last 100 (tf2's). The perception node *listens* best effort
  (``TF_LISTENER_QOS``): with a reliable reader one lost pose holds back every later one until the
  writer's next heartbeat repairs it (measured in replay: ego poses arrived in bursts once a second,
  so sweeps went out without ego motion); best effort loses that one pose and interpolates across it.
  ``/tf_static``: reliable, transient local (depth 1 for a publisher
  that republishes the whole set, 100 for a listener), so late joiners get the static transforms.
- Calibration results: reliable, transient local, depth 1 (late joiners get the latest calibration).
- The bag player publishes RELIABLE: a best-effort publisher never connects to a reliable subscriber.
"""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

SENSOR_QOS = qos_profile_sensor_data

OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)

TF_LISTENER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE)

TF_STATIC_PUBLISHER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                     reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

TF_STATIC_LISTENER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                    reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL)

CALIBRATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)

PLAYER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)

CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


def player_qos(topic: str) -> QoSProfile:
    """QoS the bag player publishes ``topic`` with: transient local for ``/tf_static``, else reliable."""
    if topic == "/tf_static":
        # Depth 100, not 1: the player publishes each recorded /tf_static message as it is; a late joiner
        # must get all of them if a bag split the static set over several messages.
        return TF_STATIC_LISTENER_QOS
    return PLAYER_QOS
