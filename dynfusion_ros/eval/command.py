"""`dynfusion score-detector`: mAP per configuration of the detector and context on
labelled bags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynfusion_ros.command_args import (
    UsageError,
    add_bags_argument,
    add_params_argument,
    bag_paths,
    sensor_values,
)
from dynfusion_ros.resources import default_model_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bags_argument(parser, "data/sim/heldout")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="detector weights JSON (default: the shipped models/detector.json)",
    )
    parser.add_argument(
        "--configurations",
        nargs="*",
        metavar="CONFIG",
        help="configurations to score, e.g. camera_half+lidar (default: every one)",
    )
    parser.add_argument("--every", type=int, default=1, metavar="N", help="score one frame in N")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_params_argument(parser)


def run(args: argparse.Namespace) -> int:
    """`dynfusion score-detector`: every configuration's mAP per context."""
    from dynfusion_ros.core.detector.levels import Configuration, all_configurations
    from dynfusion_ros.core.detector.runner import DetectorRunner
    from dynfusion_ros.core.detector.weights import WeightsError
    from dynfusion_ros.eval.detector_report import score_detector

    try:
        if args.every < 1:
            raise UsageError(f"--every must be at least 1, got {args.every}")
        bags = bag_paths(args.data)
        values = sensor_values(args)
        configurations = (
            [Configuration.parse(text) for text in args.configurations]
            if args.configurations
            else list(all_configurations())
        )
        runner = DetectorRunner.load(args.model or default_model_path("detector.json"))
    except (UsageError, ValueError, WeightsError) as error:
        print(f"dynfusion score-detector: error: {error}", file=sys.stderr)
        return 2
    try:
        report = score_detector(
            runner, bags, configurations, every=args.every, progress=not args.quiet, values=values
        )
    except ValueError as error:  # e.g. a bag without ground truth
        print(f"dynfusion score-detector: error: {error}", file=sys.stderr)
        return 2
    table = report.markdown()
    print("nuScenes mAP (%) per configuration and context, BEV centre distance 0.5/1/2/4 m:\n")
    print(table)
    print("\nAP (%) per class and per centre-distance threshold, all frames:\n")
    print(report.class_markdown())
    best = report.best_single()
    print("\nbest single sensor per context: " + ", ".join(f"{c}: {b}" for c, b in best.items()))
    timing = ", ".join(f"{k} {v:.1f}" for k, v in report.option_ms.items())
    print(f"median ms per option: {timing}; fusion and head {report.head_ms:.1f}")
    if args.markdown is not None:
        args.markdown.write_text(table + "\n\n" + report.class_markdown() + "\n")
        print(f"wrote {args.markdown}")
    return 0
