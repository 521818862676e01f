"""The lidar correction: each sweep registered to a local map, with KISS-ICP's parts.

KISS-ICP (Vizzo et al., 2023) is used for what it is good at: deskewing a sweep,
voxelising it, point-to-point ICP against a voxel-hash local map with an adaptive
correspondence threshold, and keeping that map. Its ``KissICP`` class is not used as a
whole, because it predicts each sweep from the one before at a constant velocity: a
selective correction skips sweeps whenever the gate leaves the lidar out, and then that
guess is wrong by the skipped motion. Here the IMU filter predicts the sweep's pose
instead, and deskews it with the filter's own velocity.

A local map is laid down where the filter puts the vehicle, so it is odom *as the filter
saw it* when the map began: wrong by the filter's error then, and a registered pose
measures the vehicle against that, not against odom. Taking it as an absolute pose
(as a first version did) made the filter ever surer of its position while the map's
own error was in no covariance (position NEES in the thousands). So the pose at which
the map began is cloned into the filter's state (the map's *anchor*), and a registered
pose is measured as ``map_pose @ inv(anchor) @ pose``: the anchor's uncertainty, and
its correlation with today's pose, stay in the covariance. Each sweep joins the map at
the filter's corrected pose seen in the map's frame (never at a registration the gate
refused). As the map forgets what lies beyond the lidar's range and re-lays it from
new sweeps, its frame wanders a little from the anchor's: the clone's covariance grows
with the distance driven (``map_drift_*``). After ``restart_after_s`` without a sweep
the map, and its anchor, start again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynfusion_ros.core.odometry.filter import (
    ATTITUDE,
    CLONE_ATTITUDE,
    CLONE_POSITION,
    POSITION,
    ClonedPose,
    ImuFilter,
    Update,
    correlated_error_share,
)
from dynfusion_ros.core.rotations import skew, so3_exp, so3_log
from dynfusion_ros.core.types import NS_PER_S, PointScan

MIN_POINTS = 500  # fewer, after cropping: a blind or dropped-out sweep
VOXEL_SIZE_M = 1.0
MAX_RANGE_M = 100.0
MIN_RANGE_M = 2.5  # the vehicle's own body
GROUND_CLEARANCE_M = 0.3  # points lower than this above base_link are taken as road
SCATTER_RANGE_M = 15.0  # flakes and drops that scatter the beam back lie nearer than this
SCATTER_VOXEL_M = 0.5  # voxel in which a surface this near shows several points...
SCATTER_MIN_POINTS = 3  # ...at least this many, where backscatter shows one or two
NAME = "lidar"


@dataclass(frozen=True)
class LidarNoise:
    """How far a registered pose is trusted against its map (one sigma), how fast the
    map's frame wanders from its anchor, and when the map is stale."""

    position_sigma_m: float = 0.05
    attitude_sigma_rad: float = 0.003
    map_drift_position_sigma: float = 0.02  # m per sqrt(m) driven
    map_drift_attitude_sigma: float = 6e-4  # rad per sqrt(m) driven
    error_correlation_s: float = 0.5  # how long a registration's error stays about the same
    restart_after_s: float = 2.0


class LidarRegistration:
    """Registers sweeps into a local map kept in odom."""

    def __init__(self, T_base_lidar: np.ndarray, noise: LidarNoise | None = None) -> None:
        from kiss_icp.config import KISSConfig

        self.T_base_lidar = np.asarray(T_base_lidar, float)
        self.noise = noise or LidarNoise()
        config = KISSConfig()
        config.data.max_range, config.data.min_range = MAX_RANGE_M, MIN_RANGE_M
        config.data.deskew = True
        config.mapping.voxel_size = VOXEL_SIZE_M
        config.registration.max_num_threads = 1  # the branches need the other cores
        self.config = config
        self.restart()
        from kiss_icp.preprocess import Preprocessor

        # a sweep without a spread of per-point times cannot be deskewed: KISS-ICP's
        # deskew divides by that spread (and aborts the process on the NaN it makes)
        data = config.data
        self.flat_preprocessor = Preprocessor(data.max_range, data.min_range, False, 1)

    def restart(self) -> None:
        """A new local map from the next sweep on."""
        from kiss_icp.mapping import get_voxel_hash_map
        from kiss_icp.preprocess import get_preprocessor
        from kiss_icp.registration import get_registration
        from kiss_icp.threshold import get_threshold_estimator

        self.preprocessor = get_preprocessor(self.config)
        self.registration = get_registration(self.config)
        self.local_map = get_voxel_hash_map(self.config)
        self.threshold = get_threshold_estimator(self.config)
        self.last_stamp_ns: int | None = None
        self.map_pose: np.ndarray | None = None  # base_link where the map began, 4x4
        self.drift_from = np.zeros(3)  # where the clone's drift was last added

    def correct(self, filter_: ImuFilter, scan: PointScan) -> Update | str:
        """Register ``scan`` (the filter already at the frame stamp) and correct the
        filter with the pose found; or why the sweep could not be used."""
        points = scan.xyz.astype(np.float64)
        solid = self._above_ground(points) & ~_airborne(points)
        points = points[solid]
        times = _usable_times(scan.fields.get("time"), solid)
        if len(points) < MIN_POINTS:
            return f"{len(points)} lidar points (at least {MIN_POINTS} needed)"
        stale = (
            self.last_stamp_ns is not None
            and (scan.stamp_ns - self.last_stamp_ns) / NS_PER_S > self.noise.restart_after_s
        )
        if stale or (filter_.clone is None and self.map_pose is not None):
            self.restart()  # stale, or the filter started again in a new odom
        source, kept = self._prepare(filter_, points, times)
        if len(source) < MIN_POINTS // 10:
            return f"{len(source)} lidar points left after cropping and voxelising"
        # KISS-ICP deskews to the sweep's last point: register the pose the lidar had
        # then, and carry the result to the filter's time on the filter's velocity
        elapsed = (filter_.state.stamp_ns - scan.stamp_ns) / NS_PER_S - float(times.max())
        since_end = self._sweep_motion(filter_, elapsed)
        end_from_base = self.T_base_lidar @ np.linalg.inv(since_end)
        previous_stamp_ns, self.last_stamp_ns = self.last_stamp_ns, scan.stamp_ns
        if self.map_pose is None:
            filter_.clone_pose()
            self.map_pose = filter_.pose
            self.drift_from = filter_.state.position.copy()
            self.local_map.update(kept, self.map_pose @ end_from_base)
            return "first sweep of a new local map"
        self._drift(filter_)
        predicted = self._in_map(filter_) @ end_from_base
        sigma = self.threshold.get_threshold()
        registered = self.registration.align_points_to_map(
            points=source,
            voxel_map=self.local_map,
            initial_guess=predicted,
            max_correspondance_distance=3 * sigma,
            kernel=sigma,
        )
        self.threshold.update_model_deviation(np.linalg.inv(predicted) @ registered)
        since_last_s = (scan.stamp_ns - previous_stamp_ns) / NS_PER_S
        update = self._update(filter_, registered @ np.linalg.inv(end_from_base), since_last_s)
        # the sweep joins the map where the filter now puts it: a registration the gate
        # refused must not bend the map that the next sweeps are registered against
        self.local_map.update(kept, self._in_map(filter_) @ end_from_base)
        return update

    def _in_map(self, filter_: ImuFilter) -> np.ndarray:
        """The filter's pose seen in the map's frame."""
        return seen_in_map(self.map_pose, filter_.clone, filter_.pose)

    def _drift(self, filter_: ImuFilter) -> None:
        """The map's frame wanders from its anchor as a random walk in the distance
        driven since the last sweep joined it."""
        position = filter_.state.position
        driven = float(np.linalg.norm(position - self.drift_from))
        self.drift_from = position.copy()
        noise = self.noise
        filter_.disturb_clone(
            [noise.map_drift_position_sigma**2 * driven] * 3
            + [noise.map_drift_attitude_sigma**2 * driven] * 3
        )

    def _above_ground(self, points: np.ndarray) -> np.ndarray:
        """Drop the road surface. On flat ground a spinning lidar's rings are circles
        around the sensor that travel with it, and point-to-point ICP matches them ring to
        ring, pulling the estimate towards standing still (measured on a simulated drive:
        the registered path came out 15 % short with the ground kept, 0.8 % without).
        Height, roll and pitch come from the IMU and the ground-vehicle constraint."""
        rotation, origin = self.T_base_lidar[:3, :3], self.T_base_lidar[:3, 3]
        height = points @ rotation[2] + origin[2]
        return height > GROUND_CLEARANCE_M

    def _prepare(
        self, filter_: ImuFilter, points: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Deskew to the sweep's last point with the filter's motion, then KISS-ICP's two
        voxel grids (the finer one joins the map, the coarser one is registered)."""
        from kiss_icp.voxelization import voxel_down_sample

        duration = float(np.ptp(times))
        if duration > 0:
            normalised = (times - times.min()) / duration
            frame = self.preprocessor.preprocess(
                points, normalised, self._sweep_motion(filter_, duration)
            )
        else:
            frame = self.flat_preprocessor.preprocess(points, times, np.eye(4))
        kept = voxel_down_sample(frame, VOXEL_SIZE_M * 0.5)
        return voxel_down_sample(kept, VOXEL_SIZE_M * 1.5), kept

    def _sweep_motion(self, filter_: ImuFilter, duration_s: float) -> np.ndarray:
        """The lidar's motion over one sweep (4x4, in the lidar frame at its start)."""
        R_base_lidar, lever = self.T_base_lidar[:3, :3], self.T_base_lidar[:3, 3]
        omega = filter_.angular_velocity
        velocity = filter_.body_velocity + np.cross(omega, lever)
        motion = np.eye(4)
        motion[:3, :3] = so3_exp(R_base_lidar.T @ omega * duration_s)
        motion[:3, 3] = R_base_lidar.T @ velocity * duration_s
        return motion

    def _update(self, filter_: ImuFilter, measured: np.ndarray, since_last_s: float) -> Update:
        """Horizontal position and attitude in the map's frame: with the road removed,
        little in a sweep pins the height, which the ground-vehicle constraint holds.
        Registrations closer together than ``error_correlation_s`` share much of their
        error: each counts for less."""
        predicted, H = map_measurement(
            self.map_pose, filter_.clone, filter_.pose, len(filter_.state.covariance)
        )
        residual = np.concatenate(
            [measured[:2, 3] - predicted[:2, 3], so3_log(predicted[:3, :3].T @ measured[:3, :3])]
        )
        noise = self.noise
        variances = [noise.position_sigma_m**2] * 2 + [noise.attitude_sigma_rad**2] * 3
        shared = correlated_error_share(since_last_s, noise.error_correlation_s)
        return filter_.update(NAME, residual, H, np.diag(variances) * shared)


def seen_in_map(map_pose: np.ndarray, anchor: ClonedPose, pose: np.ndarray) -> np.ndarray:
    """``pose`` (base_link in odom, 4x4) as a map begun at ``map_pose`` shows it, when
    the anchor clone says the map truly began at ``anchor``."""
    return map_pose @ np.linalg.inv(anchor.matrix) @ pose


def map_measurement(
    map_pose: np.ndarray, anchor: ClonedPose, pose: np.ndarray, state_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``seen_in_map`` and its Jacobian (5, ``state_size``): of the horizontal position
    and the attitude (about its own axes) on the error state, the current pose's and
    the anchor clone's."""
    R_map, R_anchor, R = map_pose[:3, :3], anchor.attitude, pose[:3, :3]
    relative = R_anchor.T @ (pose[:3, 3] - anchor.position)  # in the anchor's axes
    shown = seen_in_map(map_pose, anchor, pose)
    H = np.zeros((5, state_size))
    into_map = (R_map @ R_anchor.T)[:2]
    H[:2, POSITION] = into_map
    H[:2, CLONE_POSITION] = -into_map
    H[:2, CLONE_ATTITUDE] = (R_map @ skew(relative))[:2]
    H[2:, ATTITUDE] = np.eye(3)
    H[2:, CLONE_ATTITUDE] = -R.T @ R_anchor
    return shown, H


def _usable_times(times: np.ndarray | None, kept: np.ndarray) -> np.ndarray:
    """Per-point times (s) of the kept points; all 0 (the sweep is not deskewed) when
    the cloud has none or any is not finite: one NaN would reach KISS-ICP's deskew,
    which aborts the process on it."""
    if times is None:
        return np.zeros(np.count_nonzero(kept))
    times = times[kept].astype(np.float64)
    return times if np.isfinite(times).all() else np.zeros(len(times))


def _airborne(points: np.ndarray) -> np.ndarray:
    """Near returns (nearly) alone in their voxel: snow flakes, rain drops, fog. They
    travel with the sensor, and the map keeps those of earlier sweeps behind it, so ICP
    pairs them and pulls the registration towards standing still (measured on a snowy
    simulated drive: lidar-only speed 2.7 % short). A surface this near puts several
    points in a voxel (the sim's 32 x 1024 lidar: five or more at 15 m), a flake one;
    thick fog, dense a few metres out, can put two in one (measured on the held-out
    fog drive: position NEES 45 keeping pairs, 4.4 dropping them; no change on the
    training drives of clear, mixed, snow and fog)."""
    near = np.flatnonzero(np.einsum("ij,ij->i", points, points) < SCATTER_RANGE_M**2)
    cells = np.floor(points[near] / SCATTER_VOXEL_M).astype(np.int64) + (1 << 20)
    keys = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    alone = np.zeros(len(points), dtype=bool)
    alone[near] = counts[inverse] < SCATTER_MIN_POINTS
    return alone
