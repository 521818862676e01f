"""Odometry against ground truth, scored with evo.

The estimate lives in odom, which starts at the first pose; the truth in the simulator's
world. ATE aligns the two with the rigid transform (rotation and translation, no scale:
odometry has metric scale) that fits best, Umeyama's method as evo does it, and reports
the RMSE of the positions left over, in metres and as a share of the path driven. RPE is
the translational drift over ``RPE_SEGMENT_M`` of driving, in percent of that distance,
as KITTI's odometry benchmark reports drift (over shorter segments: these drives are
short).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynfusion_ros.core.detector.reuse import planar_pose
from dynfusion_ros.core.types import OdometryEstimate

MATCH_S = 0.01  # an estimate pairs with the truth stamped within this
RPE_SEGMENT_M = 50.0


@dataclass(frozen=True)
class Trajectory:
    """Stamped poses: (N,) ns, (N, 3) m, (N, 4) quaternions (x, y, z, w)."""

    stamps_ns: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray

    @classmethod
    def from_estimates(cls, estimates: list[OdometryEstimate]) -> Trajectory:
        return cls(
            np.array([e.stamp_ns for e in estimates], dtype=np.int64),
            np.array([e.position for e in estimates]).reshape(-1, 3),
            np.array([e.orientation for e in estimates]).reshape(-1, 4),
        )

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def to_evo(self):
        from evo.core.trajectory import PoseTrajectory3D

        return PoseTrajectory3D(
            positions_xyz=self.positions,
            orientations_quat_wxyz=self.orientations[:, [3, 0, 1, 2]],
            timestamps=self.stamps_ns / 1e9,
        )


@dataclass(frozen=True)
class TrajectoryErrors:
    ate_rmse_m: float
    ate_pct: float  # ATE RMSE over the path length, %
    rpe_trans_pct: float  # NaN when the drive is shorter than one segment
    path_length_m: float
    poses: int


def read_odometry(bag: Path, topic: str = "/ground_truth/odometry") -> Trajectory:
    """The poses of every nav_msgs/Odometry on ``topic`` of a rosbag2, in stamp order."""
    return Trajectory.from_estimates(read_odometry_messages(bag, topic))


def read_odometry_messages(
    bag: Path, topic: str = "/ground_truth/odometry"
) -> list[OdometryEstimate]:
    """Every nav_msgs/Odometry on ``topic`` of a rosbag2, whole, in stamp order."""
    from rosbags.rosbag2 import Reader

    from dynfusion_ros.ros.convert.odometry import odometry_to_estimate
    from dynfusion_ros.ros.typestore import bag_typestore

    store, estimates = bag_typestore(), []
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic == topic]
        if not wanted:
            raise ValueError(f"{bag}: no {topic} topic")
        for connection, _, raw in reader.messages(connections=wanted):
            estimates.append(odometry_to_estimate(store.deserialize_cdr(raw, connection.msgtype)))
    estimates.sort(key=lambda estimate: estimate.stamp_ns)
    return estimates


def aligned(truth: Trajectory, estimate: Trajectory):
    """The evo trajectories over the stamps they share, the estimate moved onto the
    truth by the best rigid transform; on a straight path, where that transform is not
    determined (a rotation about the line fits as well), by placing its first pose on
    the truth's."""
    from evo.core import sync
    from evo.core.geometry import GeometryException

    if len(estimate) < 3:
        raise ValueError(f"{len(estimate)} estimated poses: at least 3 are needed")
    reference, estimated = sync.associate_trajectories(
        truth.to_evo(), estimate.to_evo(), max_diff=MATCH_S
    )
    try:
        estimated.align(reference, correct_scale=False)
    except GeometryException:
        estimated.align_origin(reference)
    return reference, estimated


def trajectory_errors(truth: Trajectory, estimate: Trajectory) -> TrajectoryErrors:
    """ATE and RPE of ``estimate`` against ``truth`` over the stamps they share."""
    from evo.core import metrics

    reference, estimated = aligned(truth, estimate)
    ate = metrics.APE(metrics.PoseRelation.translation_part)
    ate.process_data((reference, estimated))
    rmse = float(ate.get_statistic(metrics.StatisticsType.rmse))
    length = float(reference.path_length)
    drift = float("nan")
    if length > RPE_SEGMENT_M:
        rpe = metrics.RPE(
            metrics.PoseRelation.translation_part,
            delta=RPE_SEGMENT_M,
            delta_unit=metrics.Unit.meters,
            all_pairs=True,
        )
        rpe.process_data((reference, estimated))
        drift = 100.0 * float(rpe.get_statistic(metrics.StatisticsType.mean)) / RPE_SEGMENT_M
    share = 100.0 * rmse / length if length > 0 else float("nan")
    return TrajectoryErrors(rmse, share, drift, length, reference.num_poses)


def combined_errors(pairs: list[tuple[Trajectory, Trajectory]]) -> TrajectoryErrors:
    """The errors of several drives together, each aligned on its own (each has its own
    odom): ATE RMSE over every pose; ATE % and RPE as the mean of the drives' own,
    weighted by the distance each drove."""
    errors = [trajectory_errors(truth, estimate) for truth, estimate in pairs]
    if not errors:
        raise ValueError("no drive to score")
    poses = sum(e.poses for e in errors)
    length = sum(e.path_length_m for e in errors)
    rmse = float(np.sqrt(sum(e.poses * e.ate_rmse_m**2 for e in errors) / poses))
    drifting = [e for e in errors if np.isfinite(e.rpe_trans_pct)]
    drift = float("nan")
    if drifting:
        weights = [e.path_length_m for e in drifting]
        drift = float(np.average([e.rpe_trans_pct for e in drifting], weights=weights))
    share = 100.0 * sum(e.ate_rmse_m for e in errors) / length
    return TrajectoryErrors(rmse, share, drift, length, poses)


@dataclass(frozen=True)
class Consistency:
    """Mean normalised estimation error squared over a drive, and the chi-square 95 %
    interval it should lie in if the covariance is honest (``dimension`` per sample)."""

    mean_nees: float
    low: float
    high: float
    dimension: int
    samples: int

    @property
    def consistent(self) -> bool:
        return self.low <= self.mean_nees <= self.high


def _consistency(errors: np.ndarray, covariances: np.ndarray) -> Consistency:
    from scipy.stats import chi2

    weighted = np.linalg.solve(covariances, errors[..., None])[..., 0]
    nees = np.einsum("ni,ni->n", errors, weighted)
    n, dimension = errors.shape
    low, high = chi2.ppf([0.025, 0.975], n * dimension) / n
    return Consistency(float(nees.mean()), float(low), float(high), dimension, n)


def _matched(truth: list[OdometryEstimate], estimates: list[OdometryEstimate]):
    """(truth, estimate) pairs stamped within MATCH_S of each other."""
    stamps = np.array([t.stamp_ns for t in truth])
    pairs = []
    for estimate in estimates:
        index = int(np.clip(np.searchsorted(stamps, estimate.stamp_ns), 1, len(stamps) - 1))
        nearest = min((index - 1, index), key=lambda i: abs(stamps[i] - estimate.stamp_ns))
        if abs(stamps[nearest] - estimate.stamp_ns) <= MATCH_S * 1e9:
            pairs.append((truth[nearest], estimate))
    return pairs


def velocity_consistency(
    truth: list[OdometryEstimate], estimates: list[OdometryEstimate]
) -> Consistency:
    """NEES of the linear velocity in base_link (3-D) against the twist covariance."""
    pairs = _matched(truth, estimates)
    errors = np.array([e.linear_velocity - t.linear_velocity for t, e in pairs])
    return _consistency(errors, np.array([e.twist_covariance[:3, :3] for _, e in pairs]))


def position_consistency(
    truth: list[OdometryEstimate], estimates: list[OdometryEstimate]
) -> Consistency:
    """NEES of the horizontal position (2-D) against the pose covariance, with odom
    placed on the truth's frame at the first estimate (where odom starts, exactly)."""
    from dynfusion_ros.core.rotations import quaternion_yaw

    pairs = _matched(truth, estimates)
    first_truth, first = pairs[0]
    yaw = quaternion_yaw(first_truth.orientation) - quaternion_yaw(first.orientation)
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    errors, covariances = [], []
    for t, e in pairs[1:]:
        world = first_truth.position[:2] + rotation @ (e.position[:2] - first.position[:2])
        errors.append(world - t.position[:2])
        covariances.append(rotation @ e.pose_covariance[:2, :2] @ rotation.T)
    return _consistency(np.array(errors), np.array(covariances))


class TruePoses:
    """A bag's /ground_truth/odometry as planar poses, looked up by stamp: temporal reuse
    trains on, and the records are made with, the true motion between two frames. A bag
    without it gives NaN poses, and its frames neither train nor record reuse."""

    MATCH_NS = 20_000_000  # the nearest pose must lie within this of the frame's stamp

    def __init__(self, bag: Path) -> None:
        try:
            estimates = read_odometry_messages(bag)
        except ValueError:  # no ground-truth odometry in this bag
            estimates = []
        self.stamps = np.array([e.stamp_ns for e in estimates], dtype=np.int64)
        self.poses = np.array([planar_pose(e.position, e.orientation) for e in estimates]).reshape(
            -1, 3
        )

    def at(self, stamp_ns: int) -> np.ndarray:
        if not len(self.stamps):
            return np.full(3, np.nan)
        right = int(np.clip(np.searchsorted(self.stamps, stamp_ns), 1, len(self.stamps) - 1))
        nearest = min((right - 1, right), key=lambda i: abs(int(self.stamps[i]) - stamp_ns))
        if abs(int(self.stamps[nearest]) - stamp_ns) > self.MATCH_NS:
            return np.full(3, np.nan)
        return self.poses[nearest]

    def known(self, stamp_ns: int) -> np.ndarray | None:
        """The pose at the stamp, or None where the bag has none near it (the runner then
        neither remembers nor reuses)."""
        pose = self.at(stamp_ns)
        return None if np.isnan(pose).any() else pose
