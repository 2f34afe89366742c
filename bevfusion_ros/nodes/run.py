"""The one ``main()`` body of the project's nodes: init, construct, spin on a MultiThreadedExecutor, shut down.

A :class:`~bevfusion_ros.errors.UserError` raised while constructing or running the node (a bad parameter,
a missing file, a model that cannot run) is printed as one line and gives exit status 2; Ctrl-C and an
external shutdown end it quietly with status 0.
"""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from bevfusion_ros.errors import UserError


def run_node(factory: Callable[[], Node], executable: str, threads: int, args: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        executor.spin()
    except UserError as err:
        print(f"{executable}: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0
