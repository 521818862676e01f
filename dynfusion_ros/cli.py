"""The `dynfusion` command: one entry point for every tool of the package.

Subcommands are added as the tools land (simulate, train, evaluate, run, replay, ...).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from importlib import metadata

from dynfusion_ros import __version__
from dynfusion_ros.resources import installed_type_hash
from dynfusion_ros.ros.realtime import keep_freed_memory

Configure = Callable[[argparse.ArgumentParser], None]

INTERFACE_TYPES = (
    ("vision_msgs", "Detection3DArray"),
    ("vision_msgs", "LabelInfo"),
    ("dynfusion_msgs", "BranchSelection"),
    ("dynfusion_msgs", "EnergyReport"),
)


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "MISSING"


def info(_: argparse.Namespace) -> int:
    """Print what this environment provides, so a broken set-up is obvious at a glance."""
    from rclpy.utilities import get_rmw_implementation_identifier

    print(f"dynfusion_ros {__version__}")
    print(f"python        {sys.version.split()[0]} ({sys.prefix})")
    print(f"ROS_DISTRO    {os.environ.get('ROS_DISTRO', 'unset (pip-based environment)')}")
    print(f"rmw           {get_rmw_implementation_identifier()}")
    print(f"ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0 (default)')}")
    for distribution in ("numpy", "torch", "opencv-python-headless", "rosbags", "safetensors"):
        print(f"{distribution:<13} {_version_of(distribution)}")
    failed = False
    for package, name in INTERFACE_TYPES:
        try:
            importlib.import_module(f"{package}.msg")
            print(f"{package + '/' + name:<31} {installed_type_hash(package, name)}")
        except (ImportError, OSError, LookupError) as error:
            failed = True
            print(f"{package + '/' + name:<31} MISSING ({error})")
    return 1 if failed else 0


def _delegate(
    module: str, arguments: str = "add_arguments", run: str = "run"
) -> tuple[Callable[[argparse.Namespace], int], Configure]:
    """A subcommand whose arguments and run live in ``module`` (imported when used, so
    `dynfusion --help` stays fast), under the names ``arguments`` and ``run``."""

    def configure(parser: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), arguments)(parser)

    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), run)(args)

    return handler, configure


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Configure | None, str]] = {
    "info": (info, None, "show the environment: ROS middleware, libraries, interface type hashes"),
    "simulate": (
        *_delegate("dynfusion_ros.sim.command"),
        "simulate a drive (camera, lidar, radar, IMU, ground truth) into a rosbag2",
    ),
    "train": (
        *_delegate("dynfusion_ros.train.command"),
        "train the fused detector or the gate",
    ),
    "score-detector": (
        *_delegate("dynfusion_ros.eval.command"),
        "score every configuration of the fused detector per context on labelled bags",
    ),
    "profile": (
        *_delegate("dynfusion_ros.eval.profiling"),
        "measure the energy of every detector option, the head and the overhead; write the "
        "energy profile",
    ),
    "evaluate": (
        *_delegate("dynfusion_ros.eval.evaluate_command"),
        "replay labelled bags through the pipeline: mAP, energy, latency, options run",
    ),
    "benchmark": (
        *_delegate("dynfusion_ros.eval.benchmark"),
        "every policy and a sweep of budgets on a suite: table and accuracy-energy plot",
    ),
    "run": (
        *_delegate("dynfusion_ros.ros.bringup"),
        "bring up the context estimator and fusion nodes in one process",
    ),
    "replay": (
        *_delegate("dynfusion_ros.ros.replay"),
        "publish a rosbag2's messages with their original timing (like ros2 bag play)",
    ),
    "record": (
        *_delegate("dynfusion_ros.ros.record"),
        "write what arrives on topics into a rosbag2 (like ros2 bag record)",
    ),
    "demo": (
        *_delegate("dynfusion_ros.ros.demo"),
        "a simulated drive replayed through the real nodes, evaluated from what they published",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynfusion", description="Dynamic, energy-budgeted sensor fusion for ROS 2."
    )
    parser.add_argument("--version", action="version", version=f"dynfusion_ros {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (handler, configure, help_text) in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        if configure is not None:
            configure(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()  # as the nodes do: what `profile` measures is what they spend
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
