"""`bevfusion-ros <subcommand>`: one entry point for every desk-side job.

Each subcommand lives in the module that owns its logic and exposes two functions:

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int          # exit status

Modules are imported only when their subcommand runs, so `bevfusion-ros dataset ...` does not pay for
importing torch or rclpy. Errors the user can fix (wrong path, unknown scene, corrupt file) are raised as
:class:`UserError` and printed as one line with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from bevfusion_ros.errors import UserError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("bevfusion_ros.data.cli", "synthetic nuScenes dataset tools (dataset synth ...)"),
    "convert": ("bevfusion_ros.data.bag_convert", "convert a nuScenes scene to a rosbag2 bag"),
    "play": ("bevfusion_ros.nodes.player", "play a rosbag2 bag through rclpy with /clock"),
    "launch": ("bevfusion_ros.launch_graph", "start a node graph without launch_ros (launch perception)"),
    "model-info": ("bevfusion_ros.model.info", "print shapes and parameter counts of a model config"),
    "train": ("bevfusion_ros.train", "train a model on a nuScenes-format dataset"),
    "eval": ("bevfusion_ros.eval.offline", "offline nuScenes detection + map IoU evaluation"),
    "export": ("bevfusion_ros.runtime.export", "export the dense model parts to ONNX"),
    "calibrate": ("bevfusion_ros.calibration.cli", "run SemAlign calibration on a dataset"),
    "calibrate-eval": ("bevfusion_ros.calibration.evaluate", "evaluate SemAlign on seeded perturbations"),
    "replay-eval": ("bevfusion_ros.eval.replay", "rosbag replay evaluation of the running node graph"),
    "demo": ("bevfusion_ros.demo", "the `make demo` job: synthetic data -> replay-eval report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bevfusion-ros", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top.print_help()
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nbevfusion-ros: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"bevfusion-ros {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"bevfusion-ros {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
