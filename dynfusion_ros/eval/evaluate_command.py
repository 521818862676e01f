"""`dynfusion evaluate`: a labelled bag through the pipeline under a policy and budget."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dynfusion_ros.command_args import UsageError, add_params_argument, bag_paths, sensor_values
from dynfusion_ros.resources import ENERGY_PROFILE, default_energy_profile, default_model_path

if TYPE_CHECKING:
    from dynfusion_ros.eval.evaluation import Evaluation, Tally


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and profile files, shared by evaluate and benchmark."""
    parser.add_argument(
        "--model", type=Path, help="detector weights JSON (default: shipped models/detector.json)"
    )
    parser.add_argument(
        "--gate", type=Path, help="gate model JSON (default: shipped models/gate.json)"
    )
    parser.add_argument(
        "--profile", type=Path, help=f"energy profile YAML (default: shipped {ENERGY_PROFILE})"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", type=Path, nargs="+", required=True, help="labelled bag(s)")
    parser.add_argument(
        "--policy",
        help="dynamic, full, late, oracle or static:<option>+<option>... (e.g. "
        "static:camera_half+lidar; default: the nodes' policy parameter's)",
    )
    parser.add_argument(
        "--budget", type=float, help="energy budget, joules per frame (default: none)"
    )
    parser.add_argument(
        "--budget-share",
        type=float,
        help="budget as a share of the full configuration's energy, e.g. 0.5",
    )
    parser.add_argument(
        "--odometry",
        help="odometry corrections: dynamic, all, none, or radar, camera, lidar joined by +"
        " (default: the nodes' odometry_corrections parameter's)",
    )
    parser.add_argument(
        "--meter", default="model", help="meter beside the profile: model, rapl, nvml, jetson"
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument(
        "--detections",
        type=Path,
        metavar="OUT.json",
        help="write the detections in the nuScenes results format (score them with "
        "nuscenes-devkit: tools/nuscenes_devkit_score.py)",
    )
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="GT.json",
        help="write the ground truth in the same format",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_params_argument(parser)
    add_pipeline_arguments(parser)


def pipeline_files(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    gate = args.gate or default_model_path("gate.json")
    if args.gate is None and not gate.exists():
        print(f"warning: no gate model at {gate}: the gate uses its prior", file=sys.stderr)
        gate = None
    profile = args.profile or default_energy_profile()
    return args.model or default_model_path("detector.json"), profile, gate


def check_budget_arguments(args: argparse.Namespace) -> None:
    if args.budget is not None and args.budget_share is not None:
        raise UsageError("give --budget or --budget-share, not both")
    if args.budget_share is not None and not args.budget_share > 0:
        raise UsageError(f"--budget-share must be positive, got {args.budget_share}")
    if args.budget is not None and not args.budget > 0:
        raise UsageError(f"--budget must be a positive number of joules, got {args.budget}")


def resolve_budget(args: argparse.Namespace, full_energy_j: float) -> float | None:
    if args.budget_share is not None:
        return args.budget_share * full_energy_j
    return args.budget


def check_topics(bag: Path, values: dict) -> None:
    """The bag must carry at least one of the configured sensor topics, and ground truth."""
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.sensor_params import bag_topic

    wanted = [bag_topic(values[f"{sensor}_topic"]) for sensor in ("camera", "lidar", "radar")]
    with Reader(bag) as reader:
        topics = {c.topic for c in reader.connections}
    if not topics & set(wanted):
        raise UsageError(
            f"{bag}: none of the sensor topics {', '.join(wanted)} (the bag has"
            f" {', '.join(sorted(topics))}): give the topics in a --params file"
        )
    if "/ground_truth/objects" not in topics:
        raise UsageError(f"{bag}: no /ground_truth/objects topic: cannot score detections")


def check_output_paths(args: argparse.Namespace) -> None:
    """Refuse an output that cannot be written before the bags are replayed."""
    for option, path in (
        ("--json", args.json),
        ("--detections", args.detections),
        ("--ground-truth", args.ground_truth),
    ):
        if path is not None and path.is_dir():
            raise UsageError(f"{option} {path} is a directory: give a file name")


def used_modalities(option_usage: dict[str, float]) -> set[str]:
    """Sensors whose stems contributed on any frame (run or reused; tracks use none)."""
    from dynfusion_ros.core.detector.levels import OPTIONS

    return {
        OPTIONS[name].stem.value
        for name, share in option_usage.items()
        if share > 0 and name in OPTIONS
    }


def write_outputs(args: argparse.Namespace, tally: Tally, evaluation: Evaluation) -> None:
    """The figures as JSON, then the nuScenes exports (each only if asked for)."""
    from dynfusion_ros.core.grid import BevGrid
    from dynfusion_ros.eval.nuscenes_format import results_meta, write_nuscenes

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(evaluation.to_json())
        print(f"wrote {args.json}")
    written = write_nuscenes(
        tally.scored,
        grid=BevGrid(),
        meta=results_meta(used_modalities(evaluation.option_usage), evaluation.policy),
        detections_path=args.detections,
        truth_path=args.ground_truth,
    )
    for path in written:
        print(f"wrote {path}")


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.core.detector.weights import WeightsError
    from dynfusion_ros.core.energy import make_meter
    from dynfusion_ros.core.gate import GateModelError, Policy
    from dynfusion_ros.core.odometry.estimator import OdometryEstimator
    from dynfusion_ros.core.pipeline import DynamicFusionPipeline
    from dynfusion_ros.eval.evaluation import replay_bags
    from dynfusion_ros.ros.gate_params import GATE_DEFAULTS

    args.policy = args.policy or GATE_DEFAULTS["policy"]
    args.odometry = args.odometry or GATE_DEFAULTS["odometry_corrections"]
    try:
        policy = Policy.parse(args.policy)
        check_budget_arguments(args)
        check_output_paths(args)
        bags = bag_paths(args.bag)
        values = sensor_values(args)
        for bag in bags:
            check_topics(bag, values)
        detector, profile, gate = pipeline_files(args)
        pipeline = DynamicFusionPipeline.from_files(
            detector,
            profile,
            gate,
            policy=policy,
            meter=make_meter(args.meter),
            odometry_policy=args.odometry,
            odometry=OdometryEstimator(),
        )
        pipeline.budget_j = resolve_budget(args, pipeline.gate.full_energy_j())
    except (UsageError, ValueError, WeightsError, GateModelError, FileNotFoundError) as error:
        print(f"dynfusion evaluate: error: {error}", file=sys.stderr)
        return 2
    if pipeline.budget_j is not None and pipeline.budget_j < pipeline.gate.cheapest_energy_j:
        print(
            f"warning: budget {pipeline.budget_j:.4g} J is below the cheapest configuration "
            f"({pipeline.gate.cheapest_energy_j:.4g} J): it runs, and every frame is a violation",
            file=sys.stderr,
        )
    try:
        tally = replay_bags(pipeline, bags, values=values, progress=not args.quiet)
    except ValueError as error:
        print(f"dynfusion evaluate: error: {error}", file=sys.stderr)
        return 2
    evaluation = tally.summary()
    print(evaluation.table())
    try:
        write_outputs(args, tally, evaluation)
    except (OSError, ValueError) as error:
        print(f"dynfusion evaluate: error: {error}", file=sys.stderr)
        return 2
    return 0
