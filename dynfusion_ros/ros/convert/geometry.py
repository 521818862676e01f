"""geometry_msgs pieces shared by several conversions: vectors, quaternions, poses."""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3

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


def yaw_quaternion(yaw: float) -> np.ndarray:
    """(x, y, z, w) of a rotation by ``yaw`` about +z."""
    return np.array([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)])


def matrix_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(x, y, z, w) of a 3x3 rotation matrix (Shepperd's method: stable for any angle)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    i = int(np.argmax([trace, m[0, 0], m[1, 1], m[2, 2]]))
    if i == 0:
        w = math.sqrt(1.0 + trace) / 2.0
        q = [
            (m[2, 1] - m[1, 2]) / (4 * w),
            (m[0, 2] - m[2, 0]) / (4 * w),
            (m[1, 0] - m[0, 1]) / (4 * w),
            w,
        ]
    else:
        a, b, c = (i - 1, i % 3, (i + 1) % 3)
        r = math.sqrt(1.0 + m[a, a] - m[b, b] - m[c, c]) / 2.0
        q = [0.0, 0.0, 0.0, (m[c, b] - m[b, c]) / (4 * r)]
        q[a], q[b], q[c] = r, (m[b, a] + m[a, b]) / (4 * r), (m[c, a] + m[a, c]) / (4 * r)
    quaternion = np.array(q)
    return quaternion / np.linalg.norm(quaternion)


def quaternion_matrix(xyzw: np.ndarray) -> np.ndarray:
    """3x3 rotation of a (x, y, z, w) quaternion, normalised first."""
    x, y, z, w = np.asarray(xyzw, dtype=np.float64) / np.linalg.norm(xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def transform_to_matrix(msg) -> np.ndarray:
    """4x4 parent-from-child matrix of a geometry_msgs/TransformStamped."""
    rotation = finite_xyzw(msg.transform.rotation, "transform.rotation")
    if not np.linalg.norm(rotation) > 1e-9:
        raise ConversionError("transform.rotation", "is a zero quaternion")
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion_matrix(rotation)
    matrix[:3, 3] = finite_xyz(msg.transform.translation, "transform.translation")
    return matrix


def quaternion_yaw(xyzw: np.ndarray) -> float:
    """Heading (rotation about +z) of a quaternion, in (-pi, pi]."""
    x, y, z, w = xyzw
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def covariance_6x6(values, field: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64).reshape(6, 6)
    if not np.isfinite(matrix).all():
        raise ConversionError(field, "contains NaN or infinity")
    return matrix
