"""The vehicle's planar motion between two images from 3-D points and their tracks.

A ground vehicle's motion over a tenth of a second is, to the camera, a move in x and y
and a turn in yaw: height, roll and pitch are the IMU's and the ground-vehicle
constraint's to hold. So the fit has three unknowns: the motion that best reprojects
the points (placed in 3-D in the old image) onto where they were tracked in the new
one. Each track carries its own sigma (its pixel error plus what its depth's error
does to it), so near, fast-moving road corners do not outvote well-placed far ones.

RANSAC draws pairs of tracks (two tracks fix three unknowns) and solves each pair
with one Gauss-Newton step from the filter's prediction, all pairs at once; the
motion most tracks agree with is refined on its consensus. Only motions the prediction
allows (within its chi-square gate) compete: a car ahead that keeps our speed is a
consensus too (of zero motion), and on a sparse street it can outvote the street.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HYPOTHESES = 24
INLIER_SIGMAS = 3.0  # a track agrees when its reprojection error is within this many sigmas
PRIOR_GATE = 16.27  # chi-square, 3 degrees of freedom, 99.9 %: motions the prediction allows


@dataclass(frozen=True)
class PlanarMotion:
    """base_link's motion between two images: its new origin in the old base_link (m),
    its yaw change (rad), their 3x3 covariance, over ``interval_s``."""

    translation: np.ndarray
    yaw: float
    covariance: np.ndarray
    interval_s: float
    inliers: int
    tracks: int

    @property
    def as_vector(self) -> np.ndarray:
        return np.array([*self.translation, self.yaw])


@dataclass(frozen=True)
class Mount:
    """The camera on base_link: base_link from optical (3x3), its origin (m), and the
    focal length (px) that turns normalised coordinates into pixels."""

    rotation: np.ndarray
    origin: np.ndarray
    focal: float


def planar_of(motion: np.ndarray) -> np.ndarray:
    """(x, y, yaw) of a 4x4 motion."""
    return np.array([motion[0, 3], motion[1, 3], np.arctan2(motion[1, 0], motion[0, 0])])


def reproject(mount: Mount, points: np.ndarray, motions: np.ndarray, *, jacobian: bool = False):
    """Normalised coordinates in the new image of ``points`` ((N, 3), or one set per
    motion (M, N, 3); old base_link) under each of ``motions`` ((M, 3): x, y, yaw of the
    new base_link in the old): (M, N, 2), and with ``jacobian`` their derivatives by
    (x, y, yaw), (M, N, 2, 3). NaN for points that end up behind the camera."""
    points = points if points.ndim == 3 else points[None]
    c, s = np.cos(motions[:, 2])[:, None], np.sin(motions[:, 2])[:, None]
    dx = points[..., 0] - motions[:, 0, None]
    dy = points[..., 1] - motions[:, 1, None]
    height = np.broadcast_to(points[..., 2], dx.shape)
    moved = np.stack([c * dx + s * dy, -s * dx + c * dy, height], axis=-1)
    camera = (moved - mount.origin) @ mount.rotation
    z = np.where(camera[..., 2] > 1e-3, camera[..., 2], np.nan)
    projected = camera[..., :2] / z[..., None]
    if not jacobian:
        return projected
    # d(camera)/d(x, y, yaw): the moved point goes -R(yaw)^T e_x, -R(yaw)^T e_y and
    # (y, -x) of itself, each seen through the mount
    R = mount.rotation
    by_x = (-c[..., None] * R[0] + s[..., None] * R[1]) + 0 * camera  # (M, N, 3)
    by_y = (-s[..., None] * R[0] - c[..., None] * R[1]) + 0 * camera
    by_yaw = moved[..., 1:2] * R[0] - moved[..., 0:1] * R[1]
    d_camera = np.stack([by_x, by_y, by_yaw], axis=-1)  # (M, N, 3, 3)
    d_projected = (d_camera[..., :2, :] - projected[..., None] * d_camera[..., 2:3, :]) / z[
        ..., None, None
    ]
    return projected, d_projected


def _whitened(mount, points, tracked, sigma, motions):
    """Residuals (M, 2N) and Jacobians (M, 2N, 3), each track divided by its sigma."""
    projected, d_projected = reproject(mount, points, motions, jacobian=True)
    scale = (mount.focal / sigma)[..., None]
    residual = (projected - tracked) * scale
    J = d_projected * scale[..., None]
    count = len(motions)
    return residual.reshape(count, -1), J.reshape(count, -1, 3)


def _gauss_newton(mount, points, tracked, sigma, motions, *, steps: int) -> np.ndarray:
    for _ in range(steps):
        residual, J = _whitened(mount, points, tracked, sigma, motions)
        lost = ~(np.isfinite(residual) & np.isfinite(J).all(axis=-1))  # behind the camera
        residual, J = np.where(lost, 0.0, residual), np.where(lost[..., None], 0.0, J)
        normal = np.einsum("mik,mil->mkl", J, J)
        # damped a little: a pair of tracks can leave a direction unfixed
        damping = 1e-6 * (np.trace(normal, axis1=1, axis2=2) + 1.0)
        normal += damping[:, None, None] * np.eye(3)
        gradient = np.einsum("mik,mi->mk", J, residual)
        motions = motions - np.linalg.solve(normal, gradient[..., None])[..., 0]
    return motions


def _agreeing(mount, points, tracked, sigma, motions) -> np.ndarray:
    """(M, N): which tracks each motion reprojects within INLIER_SIGMAS of their sigma."""
    error = np.linalg.norm(reproject(mount, points, motions) - tracked, axis=-1)
    return np.nan_to_num(error * mount.focal / sigma, nan=np.inf) < INLIER_SIGMAS


def fit_planar_motion(
    mount: Mount,
    points: np.ndarray,
    tracked: np.ndarray,
    sigma_px: np.ndarray,
    *,
    prior: np.ndarray,
    prior_covariance: np.ndarray,
    interval_s: float,
    min_inliers: int,
    rng: np.random.Generator,
) -> PlanarMotion | str:
    """The motion (x, y, yaw) that reprojects ``points`` (N, 3, old base_link) onto
    ``tracked`` (N, 2, normalised, new image), each track with its ``sigma_px``;
    ``prior`` the filter's prediction, ``prior_covariance`` (3x3) how sure it is. Or
    why there is none."""
    count = len(points)
    if count < max(min_inliers, 2):
        return f"{count} tracked corners (at least {min_inliers})"
    first = rng.integers(0, count, HYPOTHESES)
    pairs = np.stack([first, (first + rng.integers(1, count, HYPOTHESES)) % count], axis=1)
    # one step from the prior: it is within centimetres, so the step lands on the pair's motion
    starts = np.tile(prior, (HYPOTHESES, 1))
    refined = _gauss_newton(mount, points[pairs], tracked[pairs], sigma_px[pairs], starts, steps=1)
    hypotheses = np.vstack([prior, refined])
    offset = hypotheses - prior
    allowed = np.einsum("mi,mi->m", offset, np.linalg.solve(prior_covariance, offset.T).T)
    hypotheses = hypotheses[allowed <= PRIOR_GATE]
    votes = _agreeing(mount, points, tracked, sigma_px, hypotheses)
    chosen = int(np.argmax(votes.sum(axis=1)))
    motion, agree = hypotheses[chosen], votes[chosen]
    for _ in range(2):  # refine on the consensus, then take the refined motion's consensus
        if agree.sum() < min_inliers:
            break
        kept = (points[agree], tracked[agree], sigma_px[agree])
        motion = _gauss_newton(mount, *kept, motion[None], steps=2)[0]
        agree = _agreeing(mount, points, tracked, sigma_px, motion[None])[0]
    if agree.sum() < min_inliers:
        return f"no consensus among the tracked corners ({int(agree.sum())} of {count} agree)"
    residual, J = _whitened(mount, points[agree], tracked[agree], sigma_px[agree], motion[None])
    residual, J = residual[0], J[0]
    information = J.T @ J
    if not np.isfinite(information).all() or np.linalg.cond(information) > 1e12:
        return "the agreeing corners do not fix the motion (degenerate geometry)"
    # residuals larger than the sigmas promise: trust the motion less, never more
    spread = float(residual @ residual) / max(len(residual) - 3, 1)
    covariance = np.linalg.inv(information) * max(1.0, spread)
    return PlanarMotion(
        motion[:2].copy(), float(motion[2]), covariance, interval_s, int(agree.sum()), count
    )
