"""builtin_interfaces/Time and std_msgs/Header from and to integer nanoseconds."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from dynfusion_ros.core.types import NS_PER_S
from dynfusion_ros.ros.convert.errors import ConversionError


def stamp_ns(header) -> int:
    """Nanoseconds of a Header's stamp (works on rclpy and rosbags messages alike)."""
    stamp = header.stamp
    if not 0 <= stamp.nanosec < NS_PER_S:
        raise ConversionError("header.stamp.nanosec", f"{stamp.nanosec} is not in [0, 1e9)")
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def time_msg(nanoseconds: int) -> Time:
    sec, nanosec = divmod(int(nanoseconds), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def header_msg(nanoseconds: int, frame_id: str) -> Header:
    return Header(stamp=time_msg(nanoseconds), frame_id=frame_id)
