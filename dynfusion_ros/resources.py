"""Where installed package files live, with or without a sourced ROS environment.

A full ROS install answers through the ament index (AMENT_PREFIX_PATH). The pip-based
environment is a virtualenv acting as the ROS prefix, often with no AMENT_PREFIX_PATH
set, so the interpreter's prefix is searched too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _prefixes() -> list[Path]:
    paths = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [*paths, Path(sys.prefix)]


def package_share(package: str) -> Path:
    """``<prefix>/share/<package>`` of the first prefix whose ament index lists the package."""
    for prefix in _prefixes():
        marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / package
        if marker.exists():
            return prefix / "share" / package
    searched = ", ".join(str(p) for p in _prefixes())
    raise FileNotFoundError(
        f"package {package!r} is not installed in any ROS prefix (searched {searched}); "
        "run `make env`, or source the workspace that built it"
    )
