"""A rosbags type store that knows every message type our bags carry.

rosbags ships the standard Jazzy types; vision_msgs and dynfusion_msgs are registered from
the .msg files installed with them, so bag readers and writers agree with rclpy on the
wire format (and on the type hashes written into bag metadata).
"""

from __future__ import annotations

from functools import cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from dynfusion_ros.resources import package_share

EXTRA_PACKAGES = ("vision_msgs", "dynfusion_msgs")


@cache
def bag_typestore() -> Typestore:
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for package in EXTRA_PACKAGES:
        for path in sorted((package_share(package) / "msg").glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store
