"""sensor_msgs/Imu to and from the core ImuSample.

Follows the message's conventions: a covariance whose element 0 is -1 marks the quantity
as not provided; an all-zero covariance means "unknown" and becomes ``None``. An all-zero
orientation quaternion (as bags converted from ROS 1 carry) also means no orientation.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Imu

from dynfusion_ros.core.odometry.filter import MAX_ANGULAR_RATE_RADPS, MAX_SPECIFIC_FORCE_MPS2
from dynfusion_ros.core.types import ImuSample
from dynfusion_ros.ros.convert.errors import ConversionError
from dynfusion_ros.ros.convert.geometry import (
    finite_xyz,
    finite_xyzw,
    quaternion_msg,
    vector3_msg,
)
from dynfusion_ros.ros.convert.stamps import header_msg, stamp_ns

_UNIT_TOLERANCE = 1e-2


def _covariance(values, field: str) -> np.ndarray | None:
    """3x3 covariance, None when unknown (all zero). Element 0 == -1 handled by callers."""
    matrix = np.asarray(values, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(matrix).all():
        raise ConversionError(field, "contains NaN or infinity")
    if not matrix.any():
        return None
    if (np.diag(matrix) < 0).any():
        raise ConversionError(field, f"negative variance on the diagonal: {np.diag(matrix)}")
    return matrix


def _orientation(msg) -> np.ndarray | None:
    if msg.orientation_covariance[0] == -1:
        return None
    quaternion = finite_xyzw(msg.orientation, "orientation")
    norm = float(np.linalg.norm(quaternion))
    if norm == 0.0:
        return None
    if abs(norm - 1.0) > _UNIT_TOLERANCE:
        raise ConversionError("orientation", f"not a unit quaternion (norm {norm:.4f})")
    return quaternion / norm


def _within(vector: np.ndarray, limit: float, unit: str, field: str) -> np.ndarray:
    """A reading beyond the widest range vehicle IMUs measure is a corrupt sample."""
    norm = float(np.linalg.norm(vector))
    if norm > limit:
        raise ConversionError(field, f"{norm:.4g} {unit} is beyond any IMU's range ({limit:g})")
    return vector


def imu_to_sample(msg) -> ImuSample:
    """Gyro and accelerometer are required (finite and within 2000 deg/s and 16 g);
    orientation and covariances are optional."""
    for field in ("angular_velocity_covariance", "linear_acceleration_covariance"):
        if getattr(msg, field)[0] == -1:
            raise ConversionError(field, "marks the quantity as not provided (-1); it is required")
    orientation = _orientation(msg)
    rate = finite_xyz(msg.angular_velocity, "angular_velocity")
    force = finite_xyz(msg.linear_acceleration, "linear_acceleration")
    return ImuSample(
        stamp_ns=stamp_ns(msg.header),
        angular_velocity=_within(rate, MAX_ANGULAR_RATE_RADPS, "rad/s", "angular_velocity"),
        linear_acceleration=_within(force, MAX_SPECIFIC_FORCE_MPS2, "m/s^2", "linear_acceleration"),
        orientation=orientation,
        angular_velocity_covariance=_covariance(
            msg.angular_velocity_covariance, "angular_velocity_covariance"
        ),
        linear_acceleration_covariance=_covariance(
            msg.linear_acceleration_covariance, "linear_acceleration_covariance"
        ),
        orientation_covariance=(
            None
            if orientation is None
            else _covariance(msg.orientation_covariance, "orientation_covariance")
        ),
        frame_id=msg.header.frame_id,
    )


def _flat(covariance: np.ndarray | None) -> list[float]:
    return [0.0] * 9 if covariance is None else covariance.reshape(-1).tolist()


def sample_to_imu(sample: ImuSample) -> Imu:
    msg = Imu(header=header_msg(sample.stamp_ns, sample.frame_id))
    msg.angular_velocity = vector3_msg(sample.angular_velocity)
    msg.linear_acceleration = vector3_msg(sample.linear_acceleration)
    msg.angular_velocity_covariance = _flat(sample.angular_velocity_covariance)
    msg.linear_acceleration_covariance = _flat(sample.linear_acceleration_covariance)
    if sample.orientation is None:
        msg.orientation_covariance = [-1.0] + [0.0] * 8
    else:
        msg.orientation = quaternion_msg(sample.orientation)
        msg.orientation_covariance = _flat(sample.orientation_covariance)
    return msg
