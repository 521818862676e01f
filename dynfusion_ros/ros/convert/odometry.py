"""nav_msgs/Odometry to and from the core OdometryEstimate (odom -> base_link), and the
estimate as the odom -> base_link transform for /tf."""

from __future__ import annotations

from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry

from dynfusion_ros.core.types import OdometryEstimate
from dynfusion_ros.ros.convert.errors import core_errors_as
from dynfusion_ros.ros.convert.geometry import (
    covariance_6x6,
    finite_xyz,
    finite_xyzw,
    pose_msg,
    quaternion_msg,
    vector3_msg,
)
from dynfusion_ros.ros.convert.stamps import header_msg, stamp_ns


def odometry_to_estimate(msg) -> OdometryEstimate:
    with core_errors_as("pose.pose.orientation"):
        return OdometryEstimate(
            stamp_ns=stamp_ns(msg.header),
            position=finite_xyz(msg.pose.pose.position, "pose.pose.position"),
            orientation=finite_xyzw(msg.pose.pose.orientation, "pose.pose.orientation"),
            linear_velocity=finite_xyz(msg.twist.twist.linear, "twist.twist.linear"),
            angular_velocity=finite_xyz(msg.twist.twist.angular, "twist.twist.angular"),
            pose_covariance=covariance_6x6(msg.pose.covariance, "pose.covariance"),
            twist_covariance=covariance_6x6(msg.twist.covariance, "twist.covariance"),
            frame_id=msg.header.frame_id,
            child_frame_id=msg.child_frame_id,
        )


def estimate_to_odometry(estimate: OdometryEstimate) -> Odometry:
    msg = Odometry(
        header=header_msg(estimate.stamp_ns, estimate.frame_id),
        child_frame_id=estimate.child_frame_id,
    )
    msg.pose.pose = pose_msg(estimate.position, estimate.orientation)
    msg.pose.covariance = estimate.pose_covariance.reshape(-1).tolist()
    msg.twist.twist.linear = vector3_msg(estimate.linear_velocity)
    msg.twist.twist.angular = vector3_msg(estimate.angular_velocity)
    msg.twist.covariance = estimate.twist_covariance.reshape(-1).tolist()
    return msg


def estimate_to_transform(estimate: OdometryEstimate) -> TransformStamped:
    msg = TransformStamped(
        header=header_msg(estimate.stamp_ns, estimate.frame_id),
        child_frame_id=estimate.child_frame_id,
    )
    msg.transform.translation = vector3_msg(estimate.position)
    msg.transform.rotation = quaternion_msg(estimate.orientation)
    return msg
