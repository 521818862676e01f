"""`dynfusion demo` (what `make demo` runs): a simulated drive through the real nodes.

1. Simulates a 30 s mixed-context drive into ``data/demo/drive`` (kept for next time).
2. Starts the nodes (`dynfusion run`, on the replay's clock) and a recorder of their
   outputs and the ground truth, each in its own process, over real DDS.
3. Replays the drive into them at its original rate, then stops them.
4. Prints the evaluation of what the nodes *published* (from the recording), and beside
   it `dynfusion evaluate` on the same drive with the same policy and budget: the nodes
   should add no loss.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from dynfusion_ros.eval.recording import TOPICS
from dynfusion_ros.ros.processes import replay_through_nodes

DRIVE = ("mixed", 30.0, 7)  # scenario, seconds, seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=Path("data/demo"), help="where the drive and run go"
    )
    parser.add_argument("--budget", type=float, default=None, help="energy budget (J/frame)")
    parser.add_argument(
        "--policy", help="selection policy (default: the policy parameter's, config/dynfusion.yaml)"
    )
    parser.add_argument(
        "--odometry",
        help="odometry corrections (default: the odometry_corrections parameter's)",
    )


def simulate_demo_drive(drive: Path) -> None:
    """The demo drive into ``drive``, unless it is there already."""
    if (drive / "metadata.yaml").exists():
        print(f"[demo] using the simulated drive in {drive}")
        return
    from dynfusion_ros.sim.command import add_arguments as sim_arguments
    from dynfusion_ros.sim.command import run as simulate

    scenario, seconds, seed = DRIVE
    print(f"[demo] simulating a {seconds:.0f} s '{scenario}' drive into {drive} (once)")
    parser = argparse.ArgumentParser()
    sim_arguments(parser)
    options = ["--scenario", scenario, "--duration", str(seconds), "--seed", str(seed)]
    if simulate(parser.parse_args([*options, "--out", str(drive), "--overwrite"])):
        raise RuntimeError("simulating the demo drive failed")


def _replay(drive: Path, out: Path, overrides: list[str]) -> None:
    import rclpy

    from dynfusion_ros.ros.dds import use_package_transports

    use_package_transports()
    rclpy.init()
    node = rclpy.create_node("dynfusion_demo")
    print("[demo] starting the nodes and the recorder")
    try:
        topics = list(TOPICS.values())
        replay_through_nodes(node, drive, out, overrides=overrides, topics=topics, progress=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run(args: argparse.Namespace) -> int:
    from dynfusion_ros.eval.recording import evaluate_recording
    from dynfusion_ros.ros.gate_params import GATE_DEFAULTS

    overrides = ["score_threshold:=0.0"]
    if args.odometry is not None:
        overrides.append(f"odometry_corrections:={args.odometry}")
    if args.budget is not None:
        overrides.append(f"energy_budget_j:={args.budget}")
    if args.policy is not None:
        overrides.append(f"policy:={args.policy}")
    drive, recording = args.data / "drive", args.data / "run" / "recording"
    try:
        simulate_demo_drive(drive)
        shutil.rmtree(recording.parent, ignore_errors=True)
        recording.parent.mkdir(parents=True)
        _replay(drive, recording.parent, overrides)
        evaluation = evaluate_recording(
            recording, args.odometry or GATE_DEFAULTS["odometry_corrections"]
        )
    except (RuntimeError, ValueError, OSError) as error:
        print(f"dynfusion demo: error: {error}", file=sys.stderr)
        return 1
    print(f"\n[demo] what the nodes published ({recording}), against ground truth:")
    print(evaluation.table())
    return _offline_comparison(drive, evaluation)


def _offline_comparison(drive: Path, live) -> int:
    """`dynfusion evaluate` on the same drive, policy and budget."""
    from dynfusion_ros.core.odometry.estimator import OdometryEstimator
    from dynfusion_ros.core.pipeline import DynamicFusionPipeline
    from dynfusion_ros.eval.evaluation import evaluate_bags
    from dynfusion_ros.resources import default_energy_profile, default_model_path

    pipeline = DynamicFusionPipeline.from_files(
        default_model_path("detector.json"),
        default_energy_profile(),
        default_model_path("gate.json"),
        policy=live.policy,
        budget_j=live.budget_j,
        odometry_policy=live.odometry_policy,
        odometry=OdometryEstimator(),
    )
    print("\n[demo] the same drive through `dynfusion evaluate` (no DDS):")
    offline = evaluate_bags(pipeline, [drive])
    print(
        f"mAP: nodes {100 * live.map:.1f}, offline {100 * offline.map:.1f} "
        f"({100 * (live.map - offline.map):+.1f} points); energy per frame: nodes "
        f"{live.energy_j_per_frame:.3f} J, offline {offline.energy_j_per_frame:.3f} J; "
        f"odometry ATE: nodes {live.ate_pct:.2f}%, offline {offline.ate_pct:.2f}% of the path; "
        f"frames without output: nodes {live.frames_without_output}, offline"
        f" {offline.frames_without_output} of {offline.frames}"
    )
    return 0
