"""`bevfusion-ros launch perception`: start the node graph without launch_ros.

Reads the same description as ``launch/perception.launch.py`` (:mod:`bevfusion_ros.graph`) and runs each
node as its own process, ``python -m <module> --ros-args -r __node:=<name> --params-file <file> -r ...``:
exactly what launch_ros would execute. Ctrl-C (SIGINT) stops all nodes; if one node exits, the others
are stopped too and the exit status says which.

    bevfusion-ros launch perception [--params FILE] [--no-calibration] [--arg lidar_topic:=/points ...]

:func:`start_graph` is the same thing as a library call (the replay evaluation and tests use it).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bevfusion_ros.errors import UserError
from bevfusion_ros.graph import GRAPHS, LAUNCH_ARGUMENTS, ResolvedNode, resolve_graph
from bevfusion_ros.paths import share_dir


# The environment every node of the graph starts with (``bevfusion-ros launch`` and perception.launch.py
# alike); a value the user has set wins.
# - FASTDDS_DEFAULT_PROFILES_FILE: config/fastdds_large_data.xml, Fast DDS shared memory with a 16 MiB
#   segment (the file says why). Before it: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, which fixed lost UDP
#   fragments (reliable samples waited up to 2 s for a retransmission) but kept the 512 KiB shared-memory
#   segment, so reliable topics still stalled for ~1 s at a time (cameras masked for want of camera_info).
# - MALLOC_ARENA_MAX=2: glibc gives each thread that allocates its own arena by default (up to 8 per core);
#   the perception node's executor, TF, worker and torch threads all allocate frame-sized numpy buffers,
#   and the freed memory stayed spread over the arenas. Measured in 60 s soaks at 4x real time on 2
#   cores: resident memory +10.5% with the default, -1.9% to +8.6% over seven runs with 2 arenas.
# - OPENBLAS_NUM_THREADS=1: numpy's OpenBLAS starts one thread per core and they busy-wait after every
#   matrix product; the nodes' products are small (3x3 transforms of a sweep, box geometry), so the extra
#   threads only spin. Measured in the model process on demo frames: 240 ms of CPU per 133 ms frame
#   before, 133 ms after, same wall time; real-time replay of the demo scenes: end-to-end p50 296-308 ->
#   243-266 ms, p99 409-449 -> 319-323 ms, 62-63 -> 72-83 sweeps processed (two A/B pairs).
NODE_ENV = {"FASTDDS_DEFAULT_PROFILES_FILE": str(share_dir() / "config" / "fastdds_large_data.xml"),
            "MALLOC_ARENA_MAX": "2", "OPENBLAS_NUM_THREADS": "1"}


def graph_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**NODE_ENV, **os.environ, **(extra or {})}


def use_node_environment() -> None:
    """Give this process the graph's environment where the user has not set it, before rclpy starts here,
    for a process that talks to the graph itself (player, replay recorder). The DDS profile takes effect
    in this process; MALLOC_ARENA_MAX only in the child processes it starts (glibc reads it at start-up)."""
    for key, value in NODE_ENV.items():
        os.environ.setdefault(key, value)


class RunningGraph:
    """The processes of a started graph. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, nodes: list[ResolvedNode], env: dict[str, str] | None = None, log_dir: Path | None = None,
                 python: str = sys.executable):
        self.nodes = nodes
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_files: dict[str, Path] = {}
        self.commands: dict[str, list[str]] = {}
        for node in nodes:
            command = [python, "-m", node.spec.module, *node.ros_args()]
            self.commands[node.spec.name] = command
            out = None
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                self.log_files[node.spec.name] = log_dir / f"{node.spec.name}.log"
                out = open(self.log_files[node.spec.name], "w")  # noqa: SIM115 - closed with the process
            self.processes[node.spec.name] = subprocess.Popen(
                command, env=graph_environment(env), stdout=out, stderr=subprocess.STDOUT if out else None)
            if out is not None:
                out.close()

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def exited(self) -> dict[str, int]:
        """Nodes that have exited, with their exit status."""
        return {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGINT every node, then SIGTERM / SIGKILL what is left after ``timeout``. Returns exit codes."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and proc.poll() is None:
                    proc.send_signal(sig)
                try:
                    proc.wait(max(0.5, deadline - time.monotonic()) if sig is None else 3.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return {name: proc.returncode for name, proc in self.processes.items()}

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_files.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "RunningGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def check_available(nodes: list[ResolvedNode]) -> None:
    for node in nodes:
        if importlib.util.find_spec(node.spec.module) is None:
            switch = f" (switch it off: --no-{node.spec.enabled_by})" if node.spec.enabled_by else ""
            raise UserError(f"node {node.spec.name!r}: module {node.spec.module} is not available{switch}")


def start_graph(graph: str = "perception", arguments: dict[str, str] | None = None,
                env: dict[str, str] | None = None, log_dir: Path | None = None) -> RunningGraph:
    try:
        nodes = resolve_graph(graph, arguments)
    except (KeyError, FileNotFoundError) as err:
        raise UserError(str(err).strip("'\"")) from None
    check_available(nodes)
    return RunningGraph(nodes, env=env, log_dir=log_dir)


def parse_assignments(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"expected NAME:=VALUE, got {item!r}")
        out[name] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", choices=sorted(GRAPHS), help="which graph to start")
    parser.add_argument("--params", default=None, help="perception parameter file (launch argument params_file)")
    parser.add_argument("--no-calibration", action="store_true", help="do not start the calibration node")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME:=VALUE",
                        help="launch argument, as for ros2 launch: " + ", ".join(LAUNCH_ARGUMENTS))
    parser.add_argument("--dry-run", action="store_true", help="print the node commands and exit")


def run(args: argparse.Namespace) -> int:
    arguments = parse_assignments(args.arg)
    if args.params:
        arguments["params_file"] = str(Path(args.params).resolve())
    if args.no_calibration:
        arguments["calibration"] = "false"
    if args.dry_run:
        try:
            nodes = resolve_graph(args.graph, arguments)
        except (KeyError, FileNotFoundError) as err:
            raise UserError(str(err).strip("'\"")) from None
        for node in nodes:
            print(" ".join([sys.executable, "-m", node.spec.module, *node.ros_args()]))
        return 0
    running = start_graph(args.graph, arguments)
    for name, command in running.commands.items():
        print(f"[launch] {name}: {' '.join(command)}", flush=True)
    status = 0
    try:
        while True:
            exited = running.exited()
            if exited:
                name, code = next(iter(exited.items()))
                print(f"[launch] node {name} exited with status {code}; stopping the graph", file=sys.stderr)
                status = code or 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
    return status
