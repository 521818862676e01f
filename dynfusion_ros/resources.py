"""Where installed package files live, with or without a sourced ROS environment.

A full ROS install answers through the ament index (AMENT_PREFIX_PATH). The pip-based
environment is a virtualenv acting as the ROS prefix, often with no AMENT_PREFIX_PATH
set, so the interpreter's prefix is searched too.
"""

from __future__ import annotations

import json
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


def installed_type_hash(package: str, message: str) -> str:
    """The RIHS01 type hash rosidl generated for ``<package>/msg/<message>`` at build time.

    Equal hashes mean wire-compatible types: a node built against another copy of the
    package (e.g. upstream vision_msgs) talks to ours, and bags interoperate.
    """
    path = package_share(package) / "msg" / f"{message}.json"
    wanted = f"{package}/msg/{message}"
    for entry in json.loads(path.read_text())["type_hashes"]:
        if entry["type_name"] == wanted:
            return entry["hash_string"]
    raise LookupError(f"{path} has no type hash for {wanted}")


def package_file(relative: str | Path) -> Path:
    """A shipped file (``models/...``, ``config/...``): from the source checkout when running
    from one (so freshly trained or profiled files are used at once), else from the
    installed share folder."""
    checkout = Path(__file__).resolve().parents[1] / relative
    if checkout.exists():
        return checkout
    try:
        return package_share("dynfusion_ros") / relative
    except FileNotFoundError:
        return checkout  # the loader reports it missing, with this path


def default_model_path(name: str) -> Path:
    """A shipped model file, by name."""
    return package_file(Path("models") / name)


ENERGY_PROFILE = Path("config/energy_profile.yaml")
"""Where the energy profile lives in the package (and where `dynfusion profile` writes)."""


def default_energy_profile() -> Path:
    return package_file(ENERGY_PROFILE)
