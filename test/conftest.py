"""Test-session isolation for anything that touches DDS.

Every test session gets its own ROS domain and keeps discovery on this host, so parallel
sessions (and other ROS users on the network) never see each other's traffic. Set before
rclpy is initialised anywhere; child processes inherit it.
"""

from __future__ import annotations

import os

os.environ["ROS_DOMAIN_ID"] = str(10 + os.getpid() % 90)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_LOCALHOST_ONLY", None)
