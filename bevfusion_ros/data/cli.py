"""`bevfusion-ros dataset <tool>`: dataset tools. `dataset synth` writes a synthetic nuScenes dataset
(see bevfusion_ros/data/synth/README.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bevfusion_ros.errors import UserError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    synth = tools.add_parser("synth", help="generate a synthetic nuScenes-format dataset")
    synth.add_argument("--out", required=True, type=Path, help="output dataroot (new or empty directory)")
    synth.add_argument("--scenes", required=True, type=_int_list,
                       help="number of scenes; with several --split values, one count per split (e.g. 8,2)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    synth.add_argument("--split", default="mini_val",
                       help="devkit split(s) to name scenes after: train, val, mini_train, mini_val, or a comma "
                            "list of one version, e.g. train,val (default mini_val)")
    synth.add_argument("--keyframes", type=_positive_int, default=40,
                       help="keyframes (2 Hz samples) per scene (default 40: 20 s like nuScenes)")
    synth.add_argument("--camera-hz", type=_positive_int, default=12,
                       help="camera frame rate, an even number up to 20 (default 12 like nuScenes)")
    synth.add_argument("--location", default=None,
                       help="force one map location (default: drawn per scene from the devkit's four)")
    synth.add_argument("--jpeg-quality", type=_positive_int, default=90, help="JPEG quality (default 90)")
    synth.add_argument("--no-semantic", action="store_true",
                       help="skip the lidarseg labels and camera semantic masks")
    synth.add_argument("--workers", type=_positive_int, default=1,
                       help="scenes generated in parallel processes (default 1; the output is the same)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.tool != "synth":  # pragma: no cover - argparse restricts the choices
        raise UserError(f"unknown dataset tool {args.tool!r}")
    from bevfusion_ros.data.synth.generate import SynthConfig, generate
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if len(args.scenes) != len(splits):
        raise UserError(f"--scenes gives {len(args.scenes)} count(s) for {len(splits)} split(s) in --split")
    if not 1 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}")
    config = SynthConfig(out=args.out, splits=list(zip(splits, args.scenes)), seed=args.seed,
                         keyframes=args.keyframes, camera_hz=args.camera_hz, jpeg_quality=args.jpeg_quality,
                         semantic=not args.no_semantic, location=args.location, progress=not args.quiet,
                         workers=args.workers)
    summary = generate(config)
    points = summary["points_per_sweep"]
    anns = summary["annotations_per_sample"]
    print(f"wrote {len(summary['scenes'])} scene(s) of {summary['version']} to {args.out}: "
          f"{len(anns)} samples, {min(anns)}-{max(anns)} annotations per sample, "
          f"{min(points)}-{max(points)} LiDAR points per keyframe sweep")
    return 0
