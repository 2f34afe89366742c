"""Fixtures and helpers for tests that publish and receive through a real rclpy graph (no ROS mocks)."""
from __future__ import annotations

import time
import uuid

import pytest


@pytest.fixture(scope="module")
def ros_context():
    """An rclpy context of its own per test module (init/shutdown around the module)."""
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def node(ros_context):
    import rclpy

    test_node = rclpy.create_node(f"test_{uuid.uuid4().hex[:8]}", context=ros_context)
    yield test_node
    test_node.destroy_node()


def unique_topic(stem: str) -> str:
    return f"/test_{uuid.uuid4().hex[:8]}/{stem}"


def publish_until_received(node, msg, msg_type, qos=10, timeout_s: float = 10.0, topic: str | None = None):
    """Publish `msg` (a message or raw CDR bytes) every 50 ms until a subscription of the same node gets it."""
    from rclpy.executors import SingleThreadedExecutor

    topic = topic or unique_topic("roundtrip")
    received = []
    subscription = node.create_subscription(msg_type, topic, received.append, qos)
    publisher = node.create_publisher(msg_type, topic, qos)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout_s
        next_publish = 0.0
        while not received and time.monotonic() < deadline:
            if time.monotonic() >= next_publish:
                publisher.publish(msg)
                next_publish = time.monotonic() + 0.05
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.remove_node(node)
        node.destroy_subscription(subscription)
        node.destroy_publisher(publisher)
    assert received, f"nothing received on {topic} within {timeout_s} s"
    return received[0]
