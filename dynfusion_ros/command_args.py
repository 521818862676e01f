"""What every `dynfusion` subcommand shares when it checks its arguments."""

from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """A bad argument: reported on one line, exit code 2, nothing written."""


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
