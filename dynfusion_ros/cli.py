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


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    from dynfusion_ros.sim.command import add_arguments

    add_arguments(parser)


def simulate(args: argparse.Namespace) -> int:
    from dynfusion_ros.sim.command import run

    return run(args)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from dynfusion_ros.train.command import add_arguments

    add_arguments(parser)


def train(args: argparse.Namespace) -> int:
    from dynfusion_ros.train.command import run

    return run(args)


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    from dynfusion_ros.eval.command import add_arguments

    add_arguments(parser)


def score_branches(args: argparse.Namespace) -> int:
    from dynfusion_ros.eval.command import run

    return run(args)


Configure = Callable[[argparse.ArgumentParser], None]
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Configure | None]] = {
    "info": (info, "show the environment: ROS middleware, libraries, interface type hashes", None),
    "simulate": (
        simulate,
        "simulate a drive (camera, lidar, radar, IMU, ground truth) into a rosbag2",
        _simulate_arguments,
    ),
    "train": (train, "train the branch network on labelled bags", _train_arguments),
    "score-branches": (
        score_branches,
        "score every branch per context on labelled bags (BEV mAP)",
        _score_arguments,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynfusion", description="Dynamic, energy-budgeted sensor fusion for ROS 2."
    )
    parser.add_argument("--version", action="version", version=f"dynfusion_ros {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (handler, help_text, configure) in COMMANDS.items():
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
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
