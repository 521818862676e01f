"""geometry_msgs pieces shared by several conversions: vectors, quaternions, poses."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3

from dynfusion_ros.core.rotations import quaternion_matrix
from dynfusion_ros.ros.convert.errors import ConversionError


def finite_xyz(value, field: str) -> np.ndarray:
    """x, y, z of a Point or Vector3, rejecting NaN and infinity with the field's name."""
    vector = np.array([value.x, value.y, value.z], dtype=np.float64)
    if not np.isfinite(vector).all():
        raise ConversionError(field, f"contains NaN or infinity: {vector.tolist()}")
    return vector


def finite_xyzw(value, field: str) -> np.ndarray:
    quaternion = np.array([value.x, value.y, value.z, value.w], dtype=np.float64)
    if not np.isfinite(quaternion).all():
        raise ConversionError(field, f"contains NaN or infinity: {quaternion.tolist()}")
    return quaternion


def vector3_msg(values: np.ndarray) -> Vector3:
    x, y, z = (float(v) for v in values)
    return Vector3(x=x, y=y, z=z)


def quaternion_msg(xyzw: np.ndarray) -> Quaternion:
    x, y, z, w = (float(v) for v in xyzw)
    return Quaternion(x=x, y=y, z=z, w=w)


def pose_msg(position: np.ndarray, xyzw: np.ndarray) -> Pose:
    x, y, z = (float(v) for v in position)
    return Pose(position=Point(x=x, y=y, z=z), orientation=quaternion_msg(xyzw))


def transform_to_matrix(msg) -> np.ndarray:
    """4x4 parent-from-child matrix of a geometry_msgs/TransformStamped."""
    rotation = finite_xyzw(msg.transform.rotation, "transform.rotation")
    if not np.linalg.norm(rotation) > 1e-9:
        raise ConversionError("transform.rotation", "is a zero quaternion")
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(rotation)
    matrix[:3, 3] = finite_xyz(msg.transform.translation, "transform.translation")
    return matrix


def covariance_6x6(values, field: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64).reshape(6, 6)
    if not np.isfinite(matrix).all():
        raise ConversionError(field, "contains NaN or infinity")
    return matrix
