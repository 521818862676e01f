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
    """Every nav_msgs/Odometry on ``topic`` of a rosbag2, in stamp order."""
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
    return Trajectory.from_estimates(estimates)


def trajectory_errors(truth: Trajectory, estimate: Trajectory) -> TrajectoryErrors:
    """ATE and RPE of ``estimate`` against ``truth`` over the stamps they share."""
    from evo.core import metrics, sync

    if len(estimate) < 3:
        raise ValueError(f"{len(estimate)} estimated poses: at least 3 are needed")
    reference, estimated = sync.associate_trajectories(
        truth.to_evo(), estimate.to_evo(), max_diff=MATCH_S
    )
    estimated.align(reference, correct_scale=False)
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
