"""What every `dynfusion` subcommand shares when it checks its arguments."""

from __future__ import annotations

import argparse
from pathlib import Path


class UsageError(Exception):
    """A bad argument: reported on one line, exit code 2, nothing written."""


def shown_path(path: str | Path) -> str:
    """A path as a reader of a report would type it: relative to here when inside."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def bag_paths(paths: list[Path]) -> list[Path]:
    """Bags named directly, or every bag inside a folder of bags (a simulated suite)."""
    found = []
    for path in paths:
        if (path / "metadata.yaml").is_file():
            found.append(path)
        elif path.is_dir() and any(path.glob("*/metadata.yaml")):
            found += sorted(p.parent for p in path.glob("*/metadata.yaml"))
        else:
            raise UsageError(
                f"{path}: not a rosbag2 folder (no metadata.yaml) nor a folder of them"
            )
    return found


def add_bags_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--data BAG...``: labelled bags, or folders of them, resolved by ``bag_paths``."""
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        metavar="BAG",
        help=f"labelled bags, or folders of them (e.g. {example})",
    )


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    """``--params``: the nodes' parameters file, for the sensor settings (topics, field
    layouts, base frame, frame timing), so offline runs read a bag as the nodes do."""
    parser.add_argument(
        "--params",
        type=Path,
        metavar="FILE.yaml",
        help="ROS 2 parameters file the nodes run with (e.g. config/dynfusion.yaml): its"
        " sensor topics, field layouts, base frame and frame timing (default: the defaults)",
    )


def sensor_values(args: argparse.Namespace) -> dict:
    """The sensor parameters of ``--params``; UsageError for a bad file."""
    from dynfusion_ros.ros.sensor_params import load_params_file

    try:
        return load_params_file(args.params)
    except ValueError as error:
        raise UsageError(str(error)) from None
