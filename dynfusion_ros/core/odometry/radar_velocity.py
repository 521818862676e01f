"""The radar correction: ego velocity from the doppler of static returns.

A return from something that stands still has range rate ``-d . v`` (``d`` the unit
direction from the radar to it, ``v`` the radar's velocity; positive doppler recedes).
Moving cars, people, ghosts and clutter break that rule, so the fit is RANSAC on two
returns at a time, then least squares on the consensus. Automotive radars resolve
azimuth well and elevation poorly, so the fit is planar: the radar's horizontal
velocity in base_link, from each return's horizontal direction.

The radar sits ahead of base_link, so while turning it moves sideways as base_link does
not: ``v_radar = v_base + omega x r``. The measurement model carries that term, its
dependence on the gyro bias, and the noise of the gyro sample it is computed from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.odometry.filter import GYRO_BIAS, ImuFilter, Update
from dynfusion_ros.core.rotations import skew
from dynfusion_ros.core.types import PointScan

MIN_RANGE_M = 1.0  # nearer returns: bumper clutter, directions unreliable
MIN_INLIERS = 6
INLIER_THRESHOLD_MPS = 0.3  # about three doppler noise sigmas of a typical radar
MIN_DOPPLER_SIGMA_MPS = 0.05  # floor on the fitted noise, so a lucky fit is not overtrusted
MIN_AZIMUTH_SPREAD_RAD = 0.2  # both velocity components need returns at several bearings
RANSAC_HYPOTHESES = 800  # 99 % odds of two static returns when 1 in 13 is (a clutter storm)
ELEVATION_SIGMA_RAD = math.radians(2.0)  # a typical automotive radar's elevation accuracy


@dataclass(frozen=True)
class DopplerFit:
    """The radar's horizontal velocity in base_link (m/s), its 2x2 covariance, and how
    many returns agreed with it."""

    velocity: np.ndarray
    covariance: np.ndarray
    inliers: int
    returns: int


def fit_radar_velocity(scan: PointScan, rng: np.random.Generator) -> DopplerFit | str:
    """The fit, or why there is none (too few returns, one bearing, no consensus)."""
    doppler = scan.fields.get("doppler")
    if doppler is None:
        return "the radar scan has no doppler field"
    directions = (scan.xyz @ scan.T_base_sensor[:3, :3].T.astype(np.float32)).astype(np.float64)
    level_sq = (directions[:, :2] ** 2).sum(axis=1)
    usable = (level_sq > MIN_RANGE_M**2) & np.isfinite(doppler)
    if usable.sum() < MIN_INLIERS:
        return f"{int(usable.sum())} usable radar returns (at least {MIN_INLIERS} needed)"
    # the horizontal part of each unit direction (exact when the radar does not climb).
    # A radar's elevation is coarse: its noise squared, taken at face value, lengthens
    # every slant range and biases the speed high by sigma^2 / 2 (0.06 %, measured on
    # a simulated drive as 0.08 %), so its expected share is taken out of the slant
    # range squared (not clipped at zero: that would bias it long again). A radar
    # that reports no elevation (every z zero) has none to take out.
    level_sq = level_sq[usable]
    elevation_sigma = ELEVATION_SIGMA_RAD if np.any(scan.xyz[usable, 2]) else 0.0
    slant = np.sqrt(level_sq * (1.0 - elevation_sigma**2) + directions[usable, 2] ** 2)
    A = -directions[usable, :2] / slant[:, None]
    b = doppler[usable].astype(np.float64)
    best = _ransac(A, b, rng)
    if best.sum() < MIN_INLIERS:
        return f"no consensus among the radar returns ({int(best.sum())} agree)"
    azimuth = np.arctan2(A[best, 1], A[best, 0])
    if np.ptp(azimuth) < MIN_AZIMUTH_SPREAD_RAD:
        return "the agreeing radar returns lie along one bearing"
    velocity, *_ = np.linalg.lstsq(A[best], b[best], rcond=None)
    residual = b[best] - A[best] @ velocity
    sigma = max(MIN_DOPPLER_SIGMA_MPS, float(np.sqrt(residual @ residual / (best.sum() - 2))))
    covariance = sigma**2 * np.linalg.inv(A[best].T @ A[best])
    return DopplerFit(velocity, covariance, int(best.sum()), int(usable.sum()))


def _ransac(A: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The inliers of the best of RANSAC_HYPOTHESES velocities, each through two
    returns, all solved and scored at once."""
    n = len(b)
    first = rng.integers(0, n, RANSAC_HYPOTHESES)
    second = (first + rng.integers(1, n, RANSAC_HYPOTHESES)) % n  # never the same return
    pairs = np.stack([A[first], A[second]], axis=1)  # (K, 2, 2)
    solvable = np.abs(np.linalg.det(pairs)) > 1e-9  # two returns on one bearing fix nothing
    if not solvable.any():
        return np.zeros(n, dtype=bool)
    rhs = np.stack([b[first], b[second]], axis=1)[solvable, :, None]
    velocities = np.linalg.solve(pairs[solvable], rhs)[..., 0]  # (K', 2)
    inliers = np.abs(b[None, :] - velocities @ A.T) < INLIER_THRESHOLD_MPS
    return inliers[int(np.argmax(inliers.sum(axis=1)))]


def radar_velocity_update(
    filter_: ImuFilter, fit: DopplerFit, T_base_radar: np.ndarray, name: str = "radar"
) -> Update:
    """Correct the filter with the fitted radar velocity (horizontal, base_link)."""
    lever = np.asarray(T_base_radar, float)[:3, 3]
    predicted = filter_.body_velocity + np.cross(filter_.angular_velocity, lever)
    H = filter_.body_velocity_jacobian()
    H[:, GYRO_BIAS] = skew(lever)
    # the rate in omega x r is one raw gyro sample: its noise, times the lever arm
    # (0.016 m/s sideways at 3.7 m for a typical MEMS gyro), is the prediction's too
    rate_noise = skew(lever) @ skew(lever).T * filter_.angular_velocity_noise
    return filter_.update(
        name, fit.velocity - predicted[:2], H[:2], fit.covariance + rate_noise[:2, :2]
    )
