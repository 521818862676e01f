"""The DDS settings the package's processes start with (see config/fastdds.xml)."""

from __future__ import annotations

import os
from pathlib import Path

from dynfusion_ros.resources import package_file

FASTDDS_PROFILE = Path("config/fastdds.xml")
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def use_package_transports() -> None:
    """Large-message shared memory for this process and its children, unless the user
    chose a Fast DDS profile already. Call before rclpy creates a participant."""
    if any(os.environ.get(name) for name in PROFILE_VARIABLES):
        return
    for name in PROFILE_VARIABLES:
        os.environ[name] = str(package_file(FASTDDS_PROFILE))
