"""Rotations as numpy: quaternions (x, y, z, w, as geometry_msgs orders them), matrices and
the SO(3) exponential the odometry filter perturbs its attitude with."""

from __future__ import annotations

import math

import numpy as np

SMALL_ANGLE = 1e-8  # rad: below this, first-order series (exact to float precision)


def skew(vector: np.ndarray) -> np.ndarray:
    """The matrix ``[v]x`` with ``[v]x @ u == np.cross(v, u)``; for vectors (..., 3),
    matrices (..., 3, 3)."""
    v = np.asarray(vector, dtype=np.float64)
    out = np.zeros((*v.shape[:-1], 3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def so3_exp(rotation_vector: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (axis times angle, rad): Rodrigues' formula;
    for vectors (..., 3), matrices (..., 3, 3) (the odometry filter turns a frame's IMU
    samples into rotations in one call)."""
    cross = skew(rotation_vector)
    angle = np.linalg.norm(rotation_vector, axis=-1)[..., None, None]
    small = angle < SMALL_ANGLE  # first order there: exact to float precision
    safe = np.where(small, 1.0, angle)
    first = np.where(small, 1.0, np.sin(safe) / safe)
    second = np.where(small, 0.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + first * cross + second * (cross @ cross)


def so3_log(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector of a rotation matrix (angle in [0, pi])."""
    quaternion = matrix_quaternion(rotation)
    if quaternion[3] < 0:
        quaternion = -quaternion
    sine = float(np.linalg.norm(quaternion[:3]))
    if sine < SMALL_ANGLE:
        return 2.0 * quaternion[:3]
    return 2.0 * math.atan2(sine, quaternion[3]) * quaternion[:3] / sine


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


def quaternion_yaw(xyzw: np.ndarray) -> float:
    """Heading (rotation about +z) of a quaternion, in (-pi, pi]."""
    x, y, z, w = xyzw
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
